/* Memcached detection. Text protocol (github.com/memcached/memcached/blob/master/doc/protocol.txt):
 * a command word, a space and a key, the line ending in CRLF; replies are fixed words.
 * Binary protocol (24-byte header): magic 0x80 request / 0x81 response | opcode | key length (2)
 * | extras length | data type 0 | vbucket/status (2) | total body length (4) | opaque | cas. */
#ifndef GUARDIAN_PROTO_MEMCACHED_H
#define GUARDIAN_PROTO_MEMCACHED_H

static __always_inline int mc_word(const __u8 *b, char c0, char c1, char c2, char c3)
{
    return b[0] == c0 && b[1] == c1 && b[2] == c2 && b[3] == c3;
}

static __always_inline int detect_memcached(const __u8 *b, __u32 len)
{
    if (len < 5)
        return MSG_NONE;
    if ((b[0] == 0x80 || b[0] == 0x81) && len >= 24) {
        __u32 keylen = ((__u32)b[2] << 8) | b[3], extlen = b[4];
        __u32 body = ((__u32)b[8] << 24) | ((__u32)b[9] << 16) | ((__u32)b[10] << 8) | b[11];
        if (b[1] > 0x48 || b[5] != 0 || extlen > 20 || keylen > 250 || body < keylen + extlen ||
            body > (1 << 20))
            return MSG_NONE;
        if (b[0] == 0x80)
            return b[6] == 0 ? MSG_REQUEST : MSG_NONE; /* vbucket id: small */
        return MSG_RESPONSE;
    }
    /* text: every message we copy whole ends its line with CRLF */
    if (b[(len - 2) & (2 * MAX_PAYLOAD - 1)] != '\r' || b[(len - 1) & (2 * MAX_PAYLOAD - 1)] != '\n')
        return MSG_NONE;
    int n = 0; /* length of a request verb followed by a space */
    if (mc_word(b, 'g', 'e', 't', ' ') || mc_word(b, 's', 'e', 't', ' ') || mc_word(b, 'a', 'd', 'd', ' ') ||
        mc_word(b, 'c', 'a', 's', ' '))
        n = 4;
    else if (mc_word(b, 'g', 'e', 't', 's') || mc_word(b, 'i', 'n', 'c', 'r') || mc_word(b, 'd', 'e', 'c', 'r'))
        n = 5;
    else if (mc_word(b, 'd', 'e', 'l', 'e') && b[4] == 't' && len > 7 && b[5] == 'e')
        n = 7;
    else if (mc_word(b, 't', 'o', 'u', 'c') && b[4] == 'h')
        n = 6;
    if (n) {
        if (b[(n - 1) & 7] != ' ' || len < (__u32)n + 3)
            return MSG_NONE;
        __u8 k = b[n & 7];
        return k > ' ' && k < 0x7f ? MSG_REQUEST : MSG_NONE;
    }
    if ((mc_word(b, 's', 't', 'a', 't') && b[4] == 's' && (b[5] == ' ' || b[5] == '\r')) ||
        (mc_word(b, 'v', 'e', 'r', 's') && b[4] == 'i' && b[5] == 'o' && b[6] == 'n'))
        return MSG_REQUEST;
    if (mc_word(b, 'S', 'T', 'A', 'T') && b[4] == ' ')
        return MSG_RESPONSE;
    if ((mc_word(b, 'V', 'A', 'L', 'U') && b[4] == 'E' && len > 6 && b[5] == ' ') ||
        (mc_word(b, 'V', 'E', 'R', 'S') && b[4] == 'I' && b[5] == 'O' && b[6] == 'N'))
        return MSG_RESPONSE;
    if (mc_word(b, 'S', 'T', 'O', 'R') || mc_word(b, 'E', 'N', 'D', '\r') ||
        mc_word(b, 'N', 'O', 'T', '_') || mc_word(b, 'D', 'E', 'L', 'E'))
        return MSG_RESPONSE;
    return MSG_NONE;
}

#endif
