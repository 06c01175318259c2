/* JSON values as orjson writes them (capture/span.py's json_line() is the specification), into a
 * growing buffer: exact str, int within 64 bits, bool, None, dict with str keys, list, tuple; OTHER
 * for anything else, which the caller leaves to json_line(). Shared by capture/_spanjson.c and
 * capture/_fastpath.c (each keeps its own copy of the static state). */
#ifndef GUARDIAN_JSON_WRITE_H
#define GUARDIAN_JSON_WRITE_H
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

enum { OK = 0, OTHER = 1 }; /* OTHER: a value this writer leaves to the span's json_line() */
#define MAX_DEPTH 64         /* deeper nesting than any captured attribute: left to orjson */

struct buf {
    char *p;
    size_t n, cap;
};

static int reserve(struct buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void put(struct buf *b, const char *s, size_t n)
{
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

/* orjson's escapes: the two-letter ones JSON names, \u00XX for the other control characters;
 * everything else (DEL, non-ASCII as UTF-8) as it is. 0: copied. */
static char ESC[256];
static const char JSON_HEX[] = "0123456789abcdef";

static void init_escapes(void)
{
    for (int c = 0; c < 0x20; c++)
        ESC[c] = 'u';
    ESC['\b'] = 'b';
    ESC['\t'] = 't';
    ESC['\n'] = 'n';
    ESC['\f'] = 'f';
    ESC['\r'] = 'r';
    ESC['"'] = '"';
    ESC['\\'] = '\\';
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Whether any of the eight bytes is below 0x20, '"' or '\\' (bytes of 0x80 and above never are). */
static inline int needs_escape(uint64_t x)
{
    uint64_t quote = x ^ (ONES * '"'), slash = x ^ (ONES * '\\');
    return (((x - ONES * 0x20) | (quote - ONES) | (slash - ONES)) & ~x & HIGHS) != 0;
}

static int put_str(struct buf *b, PyObject *s)
{
    Py_ssize_t n;
    const char *u;
    if (PyUnicode_IS_COMPACT_ASCII(s)) {
        u = (const char *)PyUnicode_DATA(s);
        n = PyUnicode_GET_LENGTH(s);
    } else if ((u = PyUnicode_AsUTF8AndSize(s, &n)) == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear(); /* lone surrogates: orjson refuses them and json_line() knows what follows */
        return OTHER;
    }
    if (reserve(b, 6 * (size_t)n + 2) < 0)
        return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    const unsigned char *p = (const unsigned char *)u, *end = p + n, *run = p;
    /* most captured text needs no escape: skip it eight bytes at a time */
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        if (needs_escape(x))
            break;
        p += 8;
    }
    for (; p < end; p++) {
        char e = ESC[*p];
        if (!e)
            continue;
        memcpy(o, run, p - run);
        o += p - run;
        run = p + 1;
        *o++ = '\\';
        *o++ = e;
        if (e == 'u') {
            *o++ = '0';
            *o++ = '0';
            *o++ = JSON_HEX[*p >> 4];
            *o++ = JSON_HEX[*p & 15];
        }
    }
    memcpy(o, run, end - run);
    o += end - run;
    *o++ = '"';
    b->n = o - b->p;
    return OK;
}

/* Bytes s[0:n] as the JSON string of their Latin-1 text (put_str of bytes.decode("latin-1")):
 * what a str made by PyUnicode_DecodeLatin1 writes, without making it. */
static inline int put_latin1(struct buf *b, const unsigned char *s, size_t n)
{
    if (reserve(b, 6 * n + 2) < 0)
        return -1;
    char *o = b->p + b->n;
    *o++ = '"';
    const unsigned char *p = s, *end = s + n;
    while (end - p >= 8) { /* ASCII needing no escape, eight bytes at a time */
        uint64_t x;
        memcpy(&x, p, 8);
        if (needs_escape(x) || (x & HIGHS))
            break;
        memcpy(o, p, 8);
        o += 8;
        p += 8;
    }
    for (; p < end; p++) {
        unsigned char c = *p;
        if (c >= 0x80) { /* U+0080..U+00FF in UTF-8 */
            *o++ = (char)(0xC0 | (c >> 6));
            *o++ = (char)(0x80 | (c & 0x3F));
            continue;
        }
        char e = ESC[c];
        if (!e) {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        *o++ = e;
        if (e == 'u') {
            *o++ = '0';
            *o++ = '0';
            *o++ = JSON_HEX[c >> 4];
            *o++ = JSON_HEX[c & 15];
        }
    }
    *o++ = '"';
    b->n = o - b->p;
    return OK;
}

static const char DIGITS[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                             "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                             "8081828384858687888990919293949596979899";

static int put_u64(struct buf *b, int negative, unsigned long long v)
{
    char tmp[24];
    int k = sizeof(tmp);
    while (v >= 100) { /* two digits a division: timestamps have nineteen */
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        tmp[--k] = DIGITS[d + 1];
        tmp[--k] = DIGITS[d];
    }
    if (v >= 10) {
        tmp[--k] = DIGITS[v * 2 + 1];
        tmp[--k] = DIGITS[v * 2];
    } else {
        tmp[--k] = (char)('0' + v);
    }
    if (negative)
        tmp[--k] = '-';
    if (reserve(b, sizeof(tmp) - k) < 0)
        return -1;
    put(b, tmp + k, sizeof(tmp) - k);
    return OK;
}

static int put_int(struct buf *b, PyObject *v)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow == 0)
        return put_u64(b, x < 0, x < 0 ? 0ull - (unsigned long long)x : (unsigned long long)x);
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (!(u == (unsigned long long)-1 && PyErr_Occurred()))
            return put_u64(b, 0, u);
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
    }
    return OTHER; /* beyond 64 bits: orjson refuses it, json_line() falls back to the stdlib */
}

static int put_value(struct buf *b, PyObject *v, int depth);

static int put_dict(struct buf *b, PyObject *d, int depth)
{
    if (reserve(b, 2) < 0)
        return -1;
    put(b, "{", 1);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    int first = 1, rc;
    while (PyDict_Next(d, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k))
            return OTHER; /* orjson needs OPT_NON_STR_KEYS for it: json_line() */
        if (!first) {
            if (reserve(b, 1) < 0)
                return -1;
            put(b, ",", 1);
        }
        first = 0;
        if ((rc = put_str(b, k)) != OK)
            return rc;
        if (reserve(b, 1) < 0)
            return -1;
        put(b, ":", 1);
        if ((rc = put_value(b, v, depth + 1)) != OK)
            return rc;
    }
    if (reserve(b, 1) < 0)
        return -1;
    put(b, "}", 1);
    return OK;
}

static int put_array(struct buf *b, PyObject *seq, int depth)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (reserve(b, 2) < 0)
        return -1;
    put(b, "[", 1);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i) {
            if (reserve(b, 1) < 0)
                return -1;
            put(b, ",", 1);
        }
        int rc = put_value(b, items[i], depth + 1);
        if (rc != OK)
            return rc;
    }
    if (reserve(b, 1) < 0)
        return -1;
    put(b, "]", 1);
    return OK;
}

static int put_value(struct buf *b, PyObject *v, int depth)
{
    if (depth > MAX_DEPTH)
        return OTHER;
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type)
        return put_str(b, v);
    if (t == &PyLong_Type)
        return put_int(b, v);
    if (reserve(b, 5) < 0)
        return -1;
    if (v == Py_None) {
        PUT_LIT(b, "null");
        return OK;
    }
    if (v == Py_True) {
        PUT_LIT(b, "true");
        return OK;
    }
    if (v == Py_False) {
        PUT_LIT(b, "false");
        return OK;
    }
    if (t == &PyDict_Type)
        return put_dict(b, v, depth);
    if (t == &PyList_Type || t == &PyTuple_Type)
        return put_array(b, v, depth);
    return OTHER;
}

static inline int put_i64(struct buf *b, long long v)
{
    return put_u64(b, v < 0, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v);
}

/* A process's spans share one resource dict: its JSON is kept, keyed by the dict and its version
 * (CPython gives every dict a version, unique across dicts, that every change replaces), for dicts
 * whose values cannot change inside them (str, int, bool, None). */
#if PY_VERSION_HEX < 0x030C0000
#define RESOURCES 64
static struct resource {
    PyObject *dict; /* not a reference: only compared, with the version */
    uint64_t version;
    char *json;
    size_t len;
} resources[RESOURCES];

static int flat(PyObject *d)
{
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v)) {
        PyTypeObject *t = Py_TYPE(v);
        if (!PyUnicode_CheckExact(k) || !(t == &PyUnicode_Type || t == &PyLong_Type || t == &PyBool_Type || v == Py_None))
            return 0;
    }
    return 1;
}

static int put_resource(struct buf *b, PyObject *d)
{
    if (!PyDict_CheckExact(d))
        return put_value(b, d, 0);
    uint64_t version = ((PyDictObject *)d)->ma_version_tag;
    struct resource *r = &resources[((uintptr_t)d >> 4) % RESOURCES];
    if (r->dict == d && r->version == version) {
        if (reserve(b, r->len) < 0)
            return -1;
        put(b, r->json, r->len);
        return OK;
    }
    size_t at = b->n;
    int rc = put_value(b, d, 0);
    if (rc != OK || !flat(d))
        return rc;
    char *copy = PyMem_Realloc(r->json, b->n - at);
    if (copy == NULL)
        return OK; /* not kept: written all the same */
    memcpy(copy, b->p + at, b->n - at);
    *r = (struct resource){d, version, copy, b->n - at};
    return OK;
}
#else
static int put_resource(struct buf *b, PyObject *d) { return put_value(b, d, 0); }
#endif

#endif
