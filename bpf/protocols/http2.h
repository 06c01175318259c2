/* HTTP/2 detection (RFC 9113 §3.4, §4.1). A client starts with the 24-byte preface
 * "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; a server's first frame is SETTINGS. Joining an open
 * connection we accept a frame header whose length, type, flags and stream id agree:
 *   +-----------------------------------------------+
 *   | Length (24) | Type (8) | Flags (8) |R| Stream Identifier (31) |
 *   +-----------------------------------------------+ then Length bytes of payload */
#ifndef GUARDIAN_PROTO_HTTP2_H
#define GUARDIAN_PROTO_HTTP2_H

static __always_inline int detect_http2(const __u8 *b, __u32 len)
{
    if (len < 9)
        return MSG_NONE;
    if (b[0] == 'P' && b[1] == 'R' && b[2] == 'I' && b[3] == ' ' && b[4] == '*' && b[5] == ' ' &&
        b[6] == 'H' && b[7] == 'T' && b[8] == 'T')
        return len >= 16 && b[11] == '2' && b[12] == '.' && b[13] == '0' ? MSG_REQUEST : MSG_NONE;
    __u32 flen = ((__u32)b[0] << 16) | ((__u32)b[1] << 8) | b[2];
    __u8 type = b[3], flags = b[4];
    __u32 stream = ((__u32)(b[5] & 0x7f) << 24) | ((__u32)b[6] << 16) | ((__u32)b[7] << 8) | b[8];
    if (flen > 16384 || (b[5] & 0x80))
        return MSG_NONE;
    if (type == 4) /* SETTINGS: stream 0, 6-byte entries, ACK only when empty */
        return stream == 0 && ((flags == 0 && flen % 6 == 0 && flen > 0) || (flags == 1 && flen == 0))
                   ? MSG_RESPONSE : MSG_NONE;
    /* HEADERS on a client-initiated (odd) stream; only END_STREAM|END_HEADERS|PADDED|PRIORITY */
    if (type == 1 && (stream & 1) && (flags & ~0x2d) == 0 && flen > 0 && len >= 9 + flen)
        return MSG_REQUEST;
    return MSG_NONE;
}

#endif
