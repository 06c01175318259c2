/* AMQP 0-9-1 detection (amqp0-9-1 spec §4.2.2-4.2.3). A new connection starts with the
 * protocol header "AMQP" 0 0 9 1 from the client and connection.start (class 10, method 10,
 * version 0-9) from the server. Mid-stream (connections older than the agent) we accept a
 * whole method frame: type 1, a known class, a sane size, and the frame-end byte 0xCE where the
 * size says — only for methods whose direction is fixed (publish/ack/get/consume from the
 * client, deliver/get-ok from the server). Mirror: capture/protocols/amqp.py (detect). */
#ifndef GUARDIAN_PROTO_AMQP_H
#define GUARDIAN_PROTO_AMQP_H

static __always_inline int detect_amqp(const __u8 *b, __u32 len)
{
    if (len < 8)
        return MSG_NONE;
    if (b[0] == 'A' && b[1] == 'M' && b[2] == 'Q' && b[3] == 'P' && b[4] == 0 && b[5] == 0 &&
        b[6] == 9 && b[7] == 1)
        return MSG_REQUEST;
    if (len < 13 || b[0] != 1)
        return MSG_NONE;
    __u32 size = ((__u32)b[3] << 24) | ((__u32)b[4] << 16) | ((__u32)b[5] << 8) | b[6];
    if (size < 4 || size > len || size + 8 > len) /* the whole frame must be in this chunk */
        return MSG_NONE;
    if (b[(7 + size) & (2 * MAX_PAYLOAD - 1)] != 0xCE)
        return MSG_NONE;
    __u16 cls = ((__u16)b[7] << 8) | b[8], meth = ((__u16)b[9] << 8) | b[10];
    if (cls == 10 && meth == 10) /* connection.start: version-major 0, version-minor 9 */
        return (b[11] == 0 && b[12] == 9) ? MSG_RESPONSE : MSG_NONE;
    if (cls != 60)
        return MSG_NONE;
    if (meth == 40 || meth == 80 || meth == 70 || meth == 20) /* publish, ack, get, consume */
        return MSG_REQUEST;
    if (meth == 60 || meth == 71) /* deliver, get-ok */
        return MSG_RESPONSE;
    return MSG_NONE;
}

#endif
