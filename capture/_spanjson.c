/* capture._spanjson: `guardian capture --json` lines of a batch of spans, written in C.
 *
 * capture/span.py (Span.to_dict + orjson) stays the specification: lines() writes the same bytes
 * for the values it knows (exact str, int within 64 bits, bool, None, dict with str keys, list,
 * tuple) and asks the span's own json_line() for any span holding something else (floats, big
 * ints, other types, strings with lone surrogates, deep nesting). It reads a slots Span's fields
 * from their slots, as capture/_fastpath.c writes them; it never changes a span. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

enum { OK = 0, OTHER = 1 }; /* OTHER: a value this writer leaves to the span's json_line() */
#define MAX_DEPTH 64         /* deeper nesting than any captured attribute: left to orjson */
#define FIELDS 11
#define MAX_KEPT (4 << 20) /* the buffer kept between batches, at most */

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
static const char HEX[] = "0123456789abcdef";

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
            *o++ = HEX[*p >> 4];
            *o++ = HEX[*p & 15];
        }
    }
    memcpy(o, run, end - run);
    o += end - run;
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

/* ---- spans ----------------------------------------------------------------------------- */
enum { F_TRACE, F_SPAN, F_PARENT, F_NAME, F_KIND, F_START, F_END, F_STATUS, F_ATTRS, F_RESOURCE, F_MESSAGE };
/* to_dict()'s keys in its order, each with the separator before it */
static const char *const FIELD_NAMES[FIELDS] = {"trace_id", "span_id", "parent_span_id", "name", "kind",
                                               "start_time_unix_nano", "end_time_unix_nano", "status_code",
                                               "attributes", "resource", "status_message"};
static const char *const KEYS[FIELDS] = {"{\"trace_id\":", ",\"span_id\":", ",\"parent_span_id\":", ",\"name\":",
                                        ",\"kind\":", ",\"start_time_unix_nano\":", ",\"end_time_unix_nano\":",
                                        ",\"status_code\":", ",\"attributes\":", ",\"resource\":",
                                        ",\"status_message\":"};

static PyTypeObject *bound_type; /* the Span type whose slot offsets are below */
static Py_ssize_t offsets[FIELDS];

/* The slots of `type`'s fields; 0: not a slots class with every field in a slot (every span then
 * goes through its json_line()). */
static int bind(PyTypeObject *type)
{
    if (type == bound_type)
        return 1;
    if (type->tp_dict == NULL)
        return 0;
    for (int k = 0; k < FIELDS; k++) {
        PyObject *d = PyDict_GetItemString(type->tp_dict, FIELD_NAMES[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX)
            return 0;
        offsets[k] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    Py_XSETREF(bound_type, (PyTypeObject *)Py_NewRef(type));
    return 1;
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

static int put_span(struct buf *b, PyObject *span)
{
    PyObject *f[FIELDS];
    for (int k = 0; k < FIELDS; k++)
        if ((f[k] = *(PyObject **)((char *)span + offsets[k])) == NULL)
            return OTHER; /* a field never set: json_line() raises as to_dict() does */
    PyObject *msg = f[F_MESSAGE];
    if (!PyUnicode_CheckExact(msg))
        return OTHER; /* to_dict() asks its truth */
    int last = PyUnicode_GET_LENGTH(msg) ? FIELDS : FIELDS - 1;
    for (int k = 0; k < last; k++) {
        size_t n = strlen(KEYS[k]);
        if (reserve(b, n) < 0)
            return -1;
        put(b, KEYS[k], n);
        int rc = k == F_RESOURCE ? put_resource(b, f[k]) : put_value(b, f[k], 0);
        if (rc != OK)
            return rc;
    }
    if (reserve(b, 2) < 0)
        return -1;
    put(b, "}\n", 2);
    return OK;
}

static struct buf kept; /* kept between calls: a fresh buffer each batch costs page faults */
static int busy;         /* kept is in use (a json_line() that calls back in gets its own) */

/* The lines of `spans` into *b (kept, when free); -1 with an exception. */
static int build(PyObject *type, PyObject *spans, struct buf *b, int *mine)
{
    PyObject *seq = PySequence_Fast(spans, "spans must be a sequence");
    if (seq == NULL)
        return -1;
    int direct = bind((PyTypeObject *)type), rc = 0;
    *b = (struct buf){NULL, 0, 0};
    if ((*mine = !busy)) {
        busy = 1;
        *b = kept;
        b->n = 0;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        PyObject *s = items[i];
        size_t mark = b->n;
        int got = direct && Py_IS_TYPE(s, (PyTypeObject *)type) ? put_span(b, s) : OTHER;
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got == OK)
            continue;
        b->n = mark; /* what was written of it goes: the span's own line instead */
        PyObject *line = PyObject_CallMethod(s, "json_line", NULL);
        if (line == NULL || !PyBytes_Check(line)) {
            if (line != NULL)
                PyErr_SetString(PyExc_TypeError, "json_line() must return bytes");
            rc = -1;
        } else if (reserve(b, PyBytes_GET_SIZE(line)) < 0) {
            rc = -1;
        } else {
            put(b, PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
        }
        Py_XDECREF(line);
    }
    Py_DECREF(seq);
    return rc;
}

static void done(struct buf *b, int mine)
{
    if (!mine) {
        PyMem_Free(b->p);
        return;
    }
    if (b->cap > MAX_KEPT) { /* one huge batch does not pin its size */
        PyMem_Free(b->p);
        *b = (struct buf){NULL, 0, 0};
    }
    kept = *b;
    busy = 0;
}

/* lines(span_type, spans) -> bytes: each span's json_line(), concatenated */
static PyObject *spanjson_lines(PyObject *self, PyObject *args)
{
    PyObject *type, *spans, *out = NULL;
    if (!PyArg_ParseTuple(args, "O!O", &PyType_Type, &type, &spans))
        return NULL;
    struct buf b;
    int mine;
    if (build(type, spans, &b, &mine) == 0)
        out = PyBytes_FromStringAndSize(b.p ? b.p : "", b.n);
    done(&b, mine);
    return out;
}

/* write(fd, span_type, spans) -> None: lines() written to the file descriptor (all of it, or an
 * OSError: BrokenPipeError when the reader went away) */
static PyObject *spanjson_write(PyObject *self, PyObject *args)
{
    int fd;
    PyObject *type, *spans;
    if (!PyArg_ParseTuple(args, "iO!O", &fd, &PyType_Type, &type, &spans))
        return NULL;
    struct buf b;
    int mine, rc = build(type, spans, &b, &mine);
    size_t at = 0;
    while (rc == 0 && at < b.n) {
        ssize_t w;
        Py_BEGIN_ALLOW_THREADS
        w = write(fd, b.p + at, b.n - at);
        Py_END_ALLOW_THREADS
        if (w >= 0)
            at += w;
        else if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            rc = -1;
        } else if (PyErr_CheckSignals() < 0) {
            rc = -1;
        }
    }
    done(&b, mine);
    return rc == 0 ? Py_NewRef(Py_None) : NULL;
}

static PyMethodDef methods[] = {
    {"lines", spanjson_lines, METH_VARARGS, "lines(span_type, spans) -> the spans' JSON lines as one bytes."},
    {"write", spanjson_write, METH_VARARGS, "write(fd, span_type, spans): lines() written to a file descriptor."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._spanjson",
                                    "guardian capture --json lines of spans, in C (capture/span.py is the "
                                    "specification).", -1, methods};

PyMODINIT_FUNC PyInit__spanjson(void)
{
    init_escapes();
    return PyModule_Create(&module);
}
