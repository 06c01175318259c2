/* PostgreSQL frontend/backend protocol v3 detection (postgresql.org/docs/current/protocol-message-formats.html).
 * Untyped first messages: Int32 length | Int32 code (3.0 startup 196608, SSLRequest 80877103,
 * GSSENCRequest 80877104, CancelRequest 80877102). Typed messages: Byte1 type | Int32 length
 * (counts itself, not the type byte). We check the length bound and the body's shape. */
#ifndef GUARDIAN_PROTO_POSTGRES_H
#define GUARDIAN_PROTO_POSTGRES_H

static __always_inline __u32 pg_u32(const __u8 *b)
{
    return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

static __always_inline int detect_postgres(const __u8 *b, __u32 len)
{
    if (len < 5)
        return MSG_NONE;
    __u32 mlen = pg_u32(b);
    if (len >= 8 && mlen >= 8 && mlen <= 10000 && b[4] == 0x04 && b[5] == 0xd2 && b[6] == 0x16 &&
        b[7] >= 0x2e && b[7] <= 0x30) /* 1234.5678-5680: SSL/GSS/cancel */
        return mlen == 8 || mlen == 16 ? MSG_REQUEST : MSG_NONE;
    if (len >= 8 && mlen == len && mlen <= 10000 && b[4] == 0 && b[5] == 3 && b[6] == 0 && b[7] == 0)
        return MSG_REQUEST; /* StartupMessage 3.0, always written whole */
    __u32 tlen = pg_u32(b + 1);
    if (tlen < 4 || tlen > 0xffffff)
        return MSG_NONE;
    switch (b[0]) {
    case 'Q': /* Query: text\0, so the message's last byte is NUL when we see it */
    case 'P': /* Parse: name\0 query\0 Int16 n Int32[n] */
        if (tlen < 5)
            return MSG_NONE;
        if (tlen + 1 <= len)
            return b[tlen & (MAX_PAYLOAD - 1)] == 0 || b[0] == 'P' ? MSG_REQUEST : MSG_NONE;
        return len >= 6 && b[5] >= 0x09 ? MSG_REQUEST : MSG_NONE;
    case 'B': /* Bind of a statement prepared before we looked (a connection older than the
               * capture): portal\0 statement\0 ..., then Execute (portal\0 Int32) or Describe
               * ('P'|'S' name\0) in the same write */
        if (tlen < 12 || tlen + 7 > len)
            return MSG_NONE;
        {
            __u32 at = (tlen + 1) & (MAX_PAYLOAD - 1);
            __u32 nlen = pg_u32(b + at + 1);
            if (nlen > 0xffffff)
                return MSG_NONE;
            if (b[at] == 'E')
                return nlen >= 9 ? MSG_REQUEST : MSG_NONE;
            return b[at] == 'D' && nlen >= 6 && (b[at + 5] == 'P' || b[at + 5] == 'S') ? MSG_REQUEST : MSG_NONE;
        }
    case 'Z': /* ReadyForQuery: Byte1 status */
        return tlen == 5 && (b[5] == 'I' || b[5] == 'T' || b[5] == 'E') ? MSG_RESPONSE : MSG_NONE;
    case 'R': /* Authentication*: Int32 code 0..12 */
        return len >= 9 && tlen >= 8 && b[5] == 0 && b[6] == 0 && b[7] == 0 && b[8] <= 12
                   ? MSG_RESPONSE : MSG_NONE;
    case 'E': /* ErrorResponse: fields of Byte1 code + string, Severity first */
        return len >= 6 && (b[5] == 'S' || b[5] == 'V') ? MSG_RESPONSE : MSG_NONE;
    case '1': /* ParseComplete: empty */
        return tlen == 4 ? MSG_RESPONSE : MSG_NONE;
    }
    return MSG_NONE;
}

#endif
