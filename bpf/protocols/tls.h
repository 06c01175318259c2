/* TLS record detection (RFC 8446 §5.1): ContentType (20-23) | legacy_version 0x03 0x01-0x04
 * | length <= 2^14 + 2048. Matching sockets carry ciphertext: the syscall probes skip them
 * and the TLS uprobes report the plaintext instead. */
#ifndef GUARDIAN_PROTO_TLS_H
#define GUARDIAN_PROTO_TLS_H

static __always_inline int detect_tls(const __u8 *b, __u32 len)
{
    if (len < 5)
        return 0;
    if (b[0] < 20 || b[0] > 23 || b[1] != 3 || b[2] > 4)
        return 0;
    __u32 rec_len = ((__u32)b[3] << 8) | b[4];
    return rec_len > 0 && rec_len <= 18432;
}

#endif
