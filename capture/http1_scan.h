/* One HTTP/1 message head scanned into offsets: the C core of capture/protocols/http1_head.py's
 * scan(), shared by capture/_http1.c (which turns it into Python values) and capture/_fastpath.c
 * (which reads the offsets in place). http1_head.py is the specification; nothing here keeps
 * state or decides framing or pairing. */
#ifndef GUARDIAN_HTTP1_SCAN_H
#define GUARDIAN_HTTP1_SCAN_H
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#define HEAD_NO_LENGTH (-1)
#define HEAD_BAD_LENGTH (-3)

static const char *const HEAD_METHODS[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                                           "TRACE", "CONNECT"};
static const ssize_t HEAD_METHOD_LEN[] = {3, 4, 3, 6, 4, 7, 5, 5, 7};

/* Header names searched for, lower-case with their leading CRLF and trailing colon. */
enum { HEAD_TE, HEAD_CL, HEAD_HOST, HEAD_AGENT, HEAD_PARENT, HEAD_NAMES };
static const char *const HEAD_NAME[HEAD_NAMES] = {"\r\ntransfer-encoding:", "\r\ncontent-length:", "\r\nhost:",
                                                  "\r\nuser-agent:", "\r\ntraceparent:"};
static const ssize_t HEAD_NAME_LEN[HEAD_NAMES] = {20, 17, 7, 13, 14};

/* What scan() returns, as offsets from the head's first byte. */
struct head {
    ssize_t end;       /* where the CRLFCRLF starts, from the data's start */
    ssize_t first_len; /* the first line is h[0:first_len] */
    int request_ok;    /* a request line the hot path takes whole */
    long status;       /* the code of a status line the hot path takes whole, else -1 */
    int chunked;
    long long length;  /* Content-Length, HEAD_NO_LENGTH or HEAD_BAD_LENGTH */
    ssize_t at[HEAD_NAMES], stop[HEAD_NAMES]; /* a header's raw value h[at:stop]; at < 0: absent */
};

static inline unsigned char head_lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Python's bytes.isspace() set: what bytes.strip() removes. */
static inline int head_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

static inline int head_word(unsigned char c) /* a bytes pattern's \w */
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static inline ssize_t head_find_crlf(const unsigned char *s, ssize_t from, ssize_t n)
{
    while (from + 1 < n) {
        const unsigned char *r = memchr(s + from, '\r', n - 1 - from);
        if (r == NULL)
            return -1;
        if (r[1] == '\n')
            return r - s;
        from = r - s + 1;
    }
    return -1;
}

/* The request-line pattern of http1_head._REQUEST_LINE, fully matched against line[0:n]. */
static inline int head_request_ok(const unsigned char *line, ssize_t n)
{
    if (n < 5 || !(line[0] >= 'C' && line[0] <= 'T'))
        return 0; /* no method starts otherwise (a status line's 'H' goes on to HEAD's check) */
    for (size_t k = 0; k < sizeof(HEAD_METHODS) / sizeof(*HEAD_METHODS); k++) {
        ssize_t m = HEAD_METHOD_LEN[k];
        if (line[0] != (unsigned char)HEAD_METHODS[k][0] || n < m + 2 || memcmp(line, HEAD_METHODS[k], m) != 0 ||
            line[m] != ' ')
            continue;
        unsigned char c = line[m + 1];
        if (!(c == '/' || c == '*' || c == 'h' || head_word(c)))
            return 0;
        return n >= m + 2 + 9 && memcmp(line + n - 9, " HTTP/1.", 8) == 0 &&
               (line[n - 1] == '0' || line[n - 1] == '1');
    }
    return 0;
}

static inline int head_digits(const unsigned char *s, ssize_t n)
{
    if (n == 0)
        return 0;
    for (ssize_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* The value h[a:b] stripped as bytes.strip() does: *a and *b moved inward. */
static inline void head_strip(const unsigned char *h, ssize_t *a, ssize_t *b)
{
    while (*a < *b && head_space(h[*a]))
        (*a)++;
    while (*b > *a && head_space(h[*b - 1]))
        (*b)--;
}

/* The head starting at data[pos]; end: where its CRLFCRLF starts, or -1 to find it.
 * Returns 0 when data holds no CRLFCRLF after pos, 1 with *out filled. The caller checks
 * 0 <= pos <= len and end <= len. */
static inline int head_scan(const unsigned char *data, ssize_t len, ssize_t pos, ssize_t end, struct head *out)
{
    const unsigned char *h = data + pos;
    ssize_t n = end >= 0 ? end - pos : len - pos, nl = -1, found = 0;
    for (int k = 0; k < HEAD_NAMES; k++)
        out->at[k] = -1;
    /* one walk from CRLF to CRLF: the first line's end, the first occurrence of each name, and
     * (end < 0) the first CRLFCRLF, where it stops (no name crosses it: a name's letters are not
     * CR or LF) */
    for (ssize_t i = head_find_crlf(h, 0, n); i >= 0; i = head_find_crlf(h, i + 2, n)) {
        if (end < 0 && i + 3 < n && h[i + 2] == '\r' && h[i + 3] == '\n') {
            end = pos + i;
            break;
        }
        if (nl < 0)
            nl = i;
        if (found == HEAD_NAMES)
            continue;
        unsigned char c = i + 2 < n ? head_lower(h[i + 2]) : 0;
        if (c != 't' && c != 'c' && c != 'h' && c != 'u')
            continue;
        for (int k = 0; k < HEAD_NAMES; k++) {
            if (out->at[k] >= 0 || HEAD_NAME[k][2] != c || i + HEAD_NAME_LEN[k] > n)
                continue;
            ssize_t j = 3;
            while (j < HEAD_NAME_LEN[k] && head_lower(h[i + j]) == (unsigned char)HEAD_NAME[k][j])
                j++;
            if (j == HEAD_NAME_LEN[k]) {
                out->at[k] = i + HEAD_NAME_LEN[k];
                found++;
            }
        }
    }
    if (end < 0)
        return 0;
    n = end - pos;
    out->end = end;
    ssize_t first_len = nl >= 0 ? nl : n;
    out->first_len = first_len;
    out->request_ok = head_request_ok(h, first_len);
    out->status = -1;
    ssize_t code_len = first_len - 9 < 3 ? first_len - 9 : 3;
    if (first_len >= 10 && memcmp(h, "HTTP/1.", 7) == 0 && h[8] == ' ' && head_digits(h + 9, code_len) &&
        (first_len <= 12 || h[12] == ' ')) {
        long status = 0;
        for (ssize_t i = 0; i < code_len; i++)
            status = status * 10 + (h[9 + i] - '0');
        out->status = status;
    }
    for (int k = 0; k < HEAD_NAMES; k++) {
        ssize_t j = out->at[k] >= 0 ? head_find_crlf(h, out->at[k], n) : -1;
        out->stop[k] = j >= 0 ? j : n;
    }
    out->chunked = 0;
    if (out->at[HEAD_TE] >= 0) {
        for (ssize_t i = out->at[HEAD_TE]; i + 7 <= out->stop[HEAD_TE] && !out->chunked; i++) {
            int j = 0;
            while (j < 7 && head_lower(h[i + j]) == "chunked"[j])
                j++;
            out->chunked = j == 7;
        }
    }
    out->length = HEAD_NO_LENGTH;
    if (out->at[HEAD_CL] >= 0) {
        ssize_t a = out->at[HEAD_CL], b = out->stop[HEAD_CL];
        head_strip(h, &a, &b);
        out->length = HEAD_BAD_LENGTH;
        if (head_digits(h + a, b - a) && b - a < 19) {
            long long length = 0;
            for (ssize_t i = a; i < b; i++)
                length = length * 10 + (h[i] - '0');
            out->length = length;
        }
    }
    return 1;
}
#endif
