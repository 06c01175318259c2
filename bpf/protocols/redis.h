/* Redis RESP2/RESP3 detection (redis.io/docs/latest/develop/reference/protocol-spec). Clients
 * send commands as arrays of bulk strings: "*<n>\r\n$<len>\r\n<name>\r\n". Replies start with a
 * type byte; we accept the unambiguous simple forms and require the line to end in CRLF. */
#ifndef GUARDIAN_PROTO_REDIS_H
#define GUARDIAN_PROTO_REDIS_H

static __always_inline int redis_digit(__u8 c) { return c >= '0' && c <= '9'; }

static __always_inline int detect_redis(const __u8 *b, __u32 len)
{
    if (len < 4)
        return MSG_NONE;
    if (b[0] == '*' && len >= 8 && redis_digit(b[1])) {
        /* "*N\r\n$" or "*NN\r\n$" then a digit */
        if (b[2] == '\r' && b[3] == '\n' && b[4] == '$' && redis_digit(b[5]))
            return MSG_REQUEST;
        if (redis_digit(b[2]) && b[3] == '\r' && b[4] == '\n' && b[5] == '$' && redis_digit(b[6]))
            return MSG_REQUEST;
        return MSG_NONE;
    }
    /* a reply is one line here: it ends in CRLF (len <= MAX_PAYLOAD, the mask is for the verifier) */
    if (b[(len - 2) & (2 * MAX_PAYLOAD - 1)] != '\r' || b[(len - 1) & (2 * MAX_PAYLOAD - 1)] != '\n')
        return MSG_NONE;
    if (b[0] == '+' && b[1] >= 'A' && b[1] <= 'Z') /* +OK, +PONG, +QUEUED */
        return MSG_RESPONSE;
    if (b[0] == '-' && b[1] >= 'A' && b[1] <= 'Z' && b[2] >= 'A' && b[2] <= 'Z') /* -ERR, -WRONGTYPE */
        return MSG_RESPONSE;
    if ((b[0] == ':' || b[0] == '$') && (redis_digit(b[1]) || b[1] == '-') && redis_digit(b[2]))
        return MSG_RESPONSE;
    return MSG_NONE;
}

#endif
