/* Whole RESP2/RESP3 values found in a buffer, for capture/_fastpath.c: where a value ends, its
 * type and, for a top-level error, where its text is. capture/protocols/redis.py (RespReader) is
 * the specification; this scanner accepts only values that reader reads the same way whole, and
 * says "no" (-1) to everything else (a value cut at the buffer's end, attributes, pushes, numbers
 * Python's int() would read differently, deep nesting), which then goes to the Python parser.
 *
 *   +line\r\n  -error\r\n  :int\r\n  (bignum\r\n  _\r\n  ,double\r\n  #bool\r\n
 *   $n\r\n<n bytes>\r\n  (also !blob error, =verbatim; n < 0: nil)
 *   *n\r\n<n values>  (also ~set; %map: 2n values; n < 0: nil)     | attribute, > push: refused */
#ifndef GUARDIAN_RESP_SCAN_H
#define GUARDIAN_RESP_SCAN_H
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#define RESP_MAX_DEPTH 32        /* redis.py allows 64: deeper goes to Python */
#define RESP_MAX_COUNT 1000000   /* redis.py: an aggregate longer than this is garbage */

/* The end of the line starting at pos (the index of its "\r\n"), or -1 when none is in b[:n]. */
static inline ssize_t resp_line_end(const unsigned char *b, ssize_t n, ssize_t pos)
{
    while (pos < n - 1) {
        const unsigned char *cr = memchr(b + pos, '\r', n - 1 - pos);
        if (cr == NULL)
            return -1;
        if (cr[1] == '\n')
            return cr - b;
        pos = cr - b + 1;
    }
    return -1;
}

/* b[a:e] as an integer that int() reads alike: an optional '-' and 1-18 digits. */
static inline int resp_int(const unsigned char *b, ssize_t a, ssize_t e, long long *out)
{
    int neg = a < e && b[a] == '-';
    a += neg;
    if (a >= e || e - a > 18)
        return 0;
    long long v = 0;
    for (; a < e; a++) {
        if (b[a] < '0' || b[a] > '9')
            return 0;
        v = v * 10 + (b[a] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

/* What resp_value says of a top-level value. */
struct resp_top {
    unsigned char type; /* its first byte */
    ssize_t text, text_len; /* an error's text: the line of '-', the bytes of '!' */
};

/* The end of the whole value starting at b[pos] (within b[:n]), or -1; fills *top when given. */
static ssize_t resp_value(const unsigned char *b, ssize_t n, ssize_t pos, int depth, struct resp_top *top)
{
    if (pos >= n || depth > RESP_MAX_DEPTH)
        return -1;
    unsigned char t = b[pos];
    ssize_t e = resp_line_end(b, n, pos + 1);
    if (e < 0)
        return -1;
    long long v;
    if (top) {
        top->type = t;
        top->text = pos + 1;
        top->text_len = e - pos - 1;
    }
    switch (t) {
    case '+': case '-': case '_': case ',': case '#':
        return e + 2;
    case ':': case '(':
        return resp_int(b, pos + 1, e, &v) ? e + 2 : -1;
    case '$': case '!': case '=':
        if (!resp_int(b, pos + 1, e, &v))
            return -1;
        if (v < 0) { /* nil */
            if (top)
                top->text_len = -1;
            return e + 2;
        }
        if (v > n || e + 2 + v + 2 > n || b[e + 2 + v] != '\r' || b[e + 3 + v] != '\n')
            return -1;
        if (top) {
            top->text = e + 2;
            top->text_len = v;
        }
        return e + 2 + v + 2;
    case '*': case '~': case '%':
        if (!resp_int(b, pos + 1, e, &v) || v > RESP_MAX_COUNT)
            return -1;
        pos = e + 2;
        for (long long k = v > 0 ? (t == '%' ? 2 * v : v) : 0; k > 0; k--)
            if ((pos = resp_value(b, n, pos, depth + 1, NULL)) < 0)
                return -1;
        return pos;
    default: /* '|' attribute, '>' push, inline commands, garbage */
        return -1;
    }
}

/* A command as a client sends it: an array of 1..max_args bulk strings, whole in b[pos:n].
 * Its end, or -1; args[k] = {start, length} of each argument. */
static ssize_t resp_command(const unsigned char *b, ssize_t n, ssize_t pos, ssize_t (*args)[2], long max_args,
                            long *nargs)
{
    if (pos >= n || b[pos] != '*')
        return -1;
    ssize_t e = resp_line_end(b, n, pos + 1);
    long long count, len;
    if (e < 0 || !resp_int(b, pos + 1, e, &count) || count < 1 || count > max_args)
        return -1;
    pos = e + 2;
    for (long k = 0; k < count; k++) {
        if (pos >= n || b[pos] != '$')
            return -1;
        e = resp_line_end(b, n, pos + 1);
        if (e < 0 || !resp_int(b, pos + 1, e, &len) || len < 0 || len > n || e + 2 + len + 2 > n ||
            b[e + 2 + len] != '\r' || b[e + 3 + len] != '\n')
            return -1;
        args[k][0] = e + 2;
        args[k][1] = len;
        pos = e + 2 + len + 2;
    }
    *nargs = count;
    return pos;
}
#endif
