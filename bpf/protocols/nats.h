/* NATS client protocol detection (docs.nats.io/reference/reference-protocols/nats-protocol).
 * The server speaks first with "INFO {json}\r\n"; clients send "CONNECT {json}\r\n" and
 * PUB/HPUB/SUB lines, servers MSG/HMSG. Bare PING/PONG/+OK are left undetected: they are
 * not distinctive (a Redis reply is "+OK" too). */
#ifndef GUARDIAN_PROTO_NATS_H
#define GUARDIAN_PROTO_NATS_H

static __always_inline int nats_subject_char(__u8 c)
{
    return c > ' ' && c < 0x7f;
}

static __always_inline int detect_nats(const __u8 *b, __u32 len)
{
    if (len < 8)
        return MSG_NONE;
    if (b[0] == 'I' && b[1] == 'N' && b[2] == 'F' && b[3] == 'O' && b[4] == ' ' && b[5] == '{')
        return MSG_RESPONSE;
    if (b[0] == 'C' && b[1] == 'O' && b[2] == 'N' && b[3] == 'N' && b[4] == 'E' && b[5] == 'C' &&
        b[6] == 'T' && b[7] == ' ')
        return len > 8 && b[8] == '{' ? MSG_REQUEST : MSG_NONE;
    /* the line must end in CRLF somewhere we can see: check the chunk's end */
    if (b[(len - 2) & (2 * MAX_PAYLOAD - 1)] != '\r' || b[(len - 1) & (2 * MAX_PAYLOAD - 1)] != '\n')
        return MSG_NONE;
    if (b[0] == 'P' && b[1] == 'U' && b[2] == 'B' && b[3] == ' ')
        return nats_subject_char(b[4]) ? MSG_REQUEST : MSG_NONE;
    if (b[0] == 'H' && b[1] == 'P' && b[2] == 'U' && b[3] == 'B' && b[4] == ' ')
        return nats_subject_char(b[5]) ? MSG_REQUEST : MSG_NONE;
    if (b[0] == 'S' && b[1] == 'U' && b[2] == 'B' && b[3] == ' ')
        return nats_subject_char(b[4]) ? MSG_REQUEST : MSG_NONE;
    if (b[0] == 'M' && b[1] == 'S' && b[2] == 'G' && b[3] == ' ')
        return nats_subject_char(b[4]) ? MSG_RESPONSE : MSG_NONE;
    if (b[0] == 'H' && b[1] == 'M' && b[2] == 'S' && b[3] == 'G' && b[4] == ' ')
        return nats_subject_char(b[5]) ? MSG_RESPONSE : MSG_NONE;
    return MSG_NONE;
}

#endif
