/* Kafka request detection (kafka.apache.org/protocol, "Requests"): size(int32) api_key(int16)
 * api_version(int16) correlation_id(int32) client_id(int16 length + bytes), big-endian. We
 * require a sane size, a known API key and version, a non-negative correlation id, a client id
 * length that fits, and printable client id bytes. Responses (size + correlation id) carry too
 * little structure to detect; every connection starts with a request, which decides the role.
 * Mirror: capture/protocols/kafka.py (_request_header). */
#ifndef GUARDIAN_PROTO_KAFKA_H
#define GUARDIAN_PROTO_KAFKA_H

static __always_inline int kafka_printable(__u8 c) { return c >= 0x20 && c <= 0x7e; }

static __always_inline int detect_kafka(const __u8 *b, __u32 len)
{
    if (len < 14 || (b[0] & 0x80))
        return MSG_NONE;
    __u32 size = ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
    if (size < 10 || size > 100 * 1024 * 1024)
        return MSG_NONE;
    if (b[4] != 0 || b[5] >= 80 || b[6] != 0 || b[7] > 20) /* api key < 80, version <= 20 */
        return MSG_NONE;
    if (b[8] & 0x80) /* correlation id >= 0 */
        return MSG_NONE;
    __s16 client_len = (__s16)(((__u16)b[12] << 8) | b[13]);
    if (client_len < -1 || client_len > (__s32)size - 10)
        return MSG_NONE;
    /* the first bytes of the client id are printable (up to 8, those we have) */
    __u32 n = client_len > 8 ? 8 : (client_len < 0 ? 0 : (__u32)client_len);
    if (len < 14 + n)
        n = len - 14;
#pragma unroll
    for (__u32 i = 0; i < 8; i++) {
        if (i >= n)
            break;
        if (!kafka_printable(b[14 + i]))
            return MSG_NONE;
    }
    return MSG_REQUEST;
}

#endif
