/* HTTP/1.x detection (RFC 9112 §3, §4): a request line "METHOD SP request-target SP
 * HTTP/1.x" or a status line "HTTP/1.x SP 3DIGIT SP". We check the method token against
 * the registered methods and the character after it, not one magic byte. */
#ifndef GUARDIAN_PROTO_HTTP1_H
#define GUARDIAN_PROTO_HTTP1_H

static __always_inline int http1_target_start(__u8 c)
{
    /* origin-form "/", asterisk-form "*", absolute-form "http://..." */
    return c == '/' || c == '*' || c == 'h';
}

static __always_inline int detect_http1(const __u8 *b, __u32 len)
{
    if (len < 8)
        return MSG_NONE;
    if (b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/' && b[5] == '1' &&
        b[6] == '.') {
        if (len < 13 || (b[7] != '0' && b[7] != '1') || b[8] != ' ')
            return MSG_NONE;
        if (b[9] < '1' || b[9] > '5' || b[10] < '0' || b[10] > '9' || b[11] < '0' || b[11] > '9')
            return MSG_NONE;
        return MSG_RESPONSE;
    }
    /* method token lengths: 3 GET PUT, 4 POST HEAD, 5 PATCH TRACE, 6 DELETE, 7 OPTIONS CONNECT */
    int n = 0;
    if ((b[0] == 'G' && b[1] == 'E' && b[2] == 'T') || (b[0] == 'P' && b[1] == 'U' && b[2] == 'T'))
        n = 3;
    else if ((b[0] == 'P' && b[1] == 'O' && b[2] == 'S' && b[3] == 'T') ||
             (b[0] == 'H' && b[1] == 'E' && b[2] == 'A' && b[3] == 'D'))
        n = 4;
    else if ((b[0] == 'P' && b[1] == 'A' && b[2] == 'T' && b[3] == 'C' && b[4] == 'H') ||
             (b[0] == 'T' && b[1] == 'R' && b[2] == 'A' && b[3] == 'C' && b[4] == 'E'))
        n = 5;
    else if (b[0] == 'D' && b[1] == 'E' && b[2] == 'L' && b[3] == 'E' && b[4] == 'T' && b[5] == 'E')
        n = 6;
    else if ((b[0] == 'O' && b[1] == 'P' && b[2] == 'T' && b[3] == 'I' && b[4] == 'O' &&
              b[5] == 'N' && b[6] == 'S') ||
             (b[0] == 'C' && b[1] == 'O' && b[2] == 'N' && b[3] == 'N' && b[4] == 'E' &&
              b[5] == 'C' && b[6] == 'T'))
        n = 7;
    else
        return MSG_NONE;
    if (b[n & 7] != ' ')
        return MSG_NONE;
    if (n == 7) /* CONNECT host:port, OPTIONS * — target is any visible char */
        return b[8] > ' ' ? MSG_REQUEST : MSG_NONE;
    return http1_target_start(b[(n + 1) & 7]) ? MSG_REQUEST : MSG_NONE;
}

#endif
