/* capture.export._otlp_wire: decode() of capture/export/otlp_wire.py in C (an OTLP
 * ExportTraceServiceRequest read from the protobuf wire format into spans).
 *
 * capture/export/otlp_wire.py is the specification: the same fields are read in the same
 * order, the same bytes are refused, and each KeyValue still goes through its cache and, on a
 * miss, through its Python reader. otlp_wire.decode uses this when setup.py (`make setup`)
 * built it and the Python otherwise; tests/capture/export/test_otlp_wire.py runs both.
 *
 * Varints are kept in 128 bits: the Python reader takes up to ten bytes (70 bits) and only
 * then folds enums into int32, so a 64-bit value would read some hostile bytes differently. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef __int128 i128;

static PyObject *SpanType, *Cache, *KeyValueFn, *DecodeErr;
static PyObject *KIND_NAME[6], *STATUS_NAME[3], *EMPTY;
/* decode_rows: KeyValue bytes -> (key, value, JSON member bytes, link slot), the Python reader
 * of an entry on a miss C does not read itself, the key names that are link slots, the
 * connection-key cache and reader of capture.traces.crossnode, a dict -> JSON text. */
static PyObject *RowCache, *RowEntryFn, *Slots, *Keys, *KeyFn, *JsonFn;
#define ROW_CACHE_MAX 65536

/* The attributes a row's connection key and peer are made of (capture/export/otlp_wire.py
 * ROW_SLOTS lists them in this order). */
enum {
    S_TRANSPORT, S_CADDR, S_CPORT, S_SADDR, S_SPORT, S_NAT_SADDR, S_NAT_SPORT, S_NAT_CADDR,
    S_NAT_CPORT, S_DB_SYSTEM, S_DB_SYSTEM_NAME, S_MESSAGING_SYSTEM, S_RPC_SERVICE, N_SLOTS
};

enum {
    T_REQ_RS = 0x0A, T_RS_RESOURCE = 0x0A, T_RS_SCOPE_SPANS = 0x12, T_RES_ATTR = 0x0A,
    T_SS_SPAN = 0x12, T_TRACE = 0x0A, T_SPAN = 0x12, T_PARENT = 0x22, T_NAME = 0x2A,
    T_KIND = 0x30, T_START = 0x39, T_END = 0x41, T_ATTR = 0x4A, T_STATUS = 0x7A,
    T_ST_MESSAGE = 0x12, T_ST_CODE = 0x18,
};

typedef struct {
    const unsigned char *b;
    Py_ssize_t n; /* the whole request: reading past it is where Python raises IndexError */
} Buf;

static int fail(const char *msg)
{
    PyErr_SetString(DecodeErr, msg);
    return -1;
}

static int varint(const Buf *buf, Py_ssize_t *i, u128 *out)
{
    u128 r = 0;
    int shift = 0;
    for (;;) {
        if (*i >= buf->n)
            return fail("truncated or malformed request: index out of range");
        unsigned char c = buf->b[(*i)++];
        r |= (u128)(c & 0x7F) << shift;
        if (c < 0x80) {
            *out = r;
            return 0;
        }
        shift += 7;
        if (shift > 63)
            return fail("varint too long");
    }
}

/* The end of a field of wire type `wire` starting at *i (after its tag). */
static int skip(const Buf *buf, Py_ssize_t *i, unsigned wire, Py_ssize_t end)
{
    u128 v;
    if (wire == 0)
        return varint(buf, i, &v); /* as in Python: no check against the message end */
    if (wire == 2) {
        if (varint(buf, i, &v) < 0)
            return -1;
        if (*i > end || v > (u128)(end - *i))
            return fail("field runs past its message");
        *i += (Py_ssize_t)v;
        return 0;
    }
    if (wire == 1)
        *i += 8;
    else if (wire == 5)
        *i += 4;
    else
        return fail("unsupported wire type");
    if (*i > end)
        return fail("field runs past its message");
    return 0;
}

/* A length-delimited field's [*a, *j) after its tag at i. */
static int len_field(const Buf *buf, Py_ssize_t i, Py_ssize_t end, Py_ssize_t *a, Py_ssize_t *j)
{
    if (i >= buf->n)
        return fail("truncated or malformed request: index out of range");
    unsigned char c = buf->b[i];
    u128 n;
    if (c < 0x80) {
        i += 1;
        n = c;
    } else if (varint(buf, &i, &n) < 0) {
        return -1;
    }
    if (i > end || n > (u128)(end - i))
        return fail("field runs past its message");
    *a = i;
    *j = i + (Py_ssize_t)n;
    return 0;
}

/* otlp_wire._keyvalue: the cache first, the Python reader on a miss. New reference. */
static PyObject *keyvalue(const Buf *buf, Py_ssize_t a, Py_ssize_t b)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)buf->b + a, b - a);
    if (!raw)
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(Cache, raw);
    if (hit) {
        Py_INCREF(hit);
    } else if (!PyErr_Occurred()) {
        hit = PyObject_CallOneArg(KeyValueFn, raw);
    }
    Py_DECREF(raw);
    if (hit && (!PyTuple_Check(hit) || PyTuple_GET_SIZE(hit) != 2)) {
        Py_DECREF(hit);
        PyErr_SetString(PyExc_TypeError, "_keyvalue must return (key, value)");
        return NULL;
    }
    return hit;
}

static int put(PyObject *out, PyObject *hit)
{
    int r = PyDict_SetItem(out, PyTuple_GET_ITEM(hit, 0), PyTuple_GET_ITEM(hit, 1));
    Py_DECREF(hit);
    return r;
}

static int attributes(const Buf *buf, Py_ssize_t i, Py_ssize_t end, PyObject *out)
{
    while (i < end) {
        if (buf->b[i] == T_RES_ATTR) {
            Py_ssize_t a, b;
            if (len_field(buf, i + 1, end, &a, &b) < 0)
                return -1;
            PyObject *hit = keyvalue(buf, a, b);
            if (!hit || put(out, hit) < 0)
                return -1;
            i = b;
        } else {
            u128 t;
            if (varint(buf, &i, &t) < 0 || skip(buf, &i, (unsigned)(t & 7), end) < 0)
                return -1;
        }
    }
    return 0;
}

static PyObject *utf8(const Buf *buf, Py_ssize_t a, Py_ssize_t b)
{
    return PyUnicode_DecodeUTF8((const char *)buf->b + a, b - a, "strict");
}

/* A Status read over the one before it (a repeated message field merges). */
static int status(const Buf *buf, Py_ssize_t i, Py_ssize_t end, u128 *code, PyObject **message)
{
    while (i < end) {
        u128 t;
        if (varint(buf, &i, &t) < 0)
            return -1;
        if (t == T_ST_CODE) {
            if (varint(buf, &i, code) < 0)
                return -1;
        } else if (t == T_ST_MESSAGE) {
            Py_ssize_t a;
            if (len_field(buf, i, end, &a, &i) < 0)
                return -1;
            PyObject *m = utf8(buf, a, i);
            if (!m)
                return -1;
            Py_SETREF(*message, m);
        } else if (skip(buf, &i, (unsigned)(t & 7), end) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *hex(const unsigned char *p, Py_ssize_t n)
{
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(2 * n, 127);
    if (!s)
        return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t k = 0; k < n; k++) {
        d[2 * k] = digits[p[k] >> 4];
        d[2 * k + 1] = digits[p[k] & 15];
    }
    return s;
}

/* An enum as the Python reader folds it: int32 on the wire, negatives sign-extended. */
static i128 enum_value(u128 v)
{
    return v > 0x7FFFFFFF ? (i128)v - ((i128)1 << 64) : (i128)v;
}

static uint64_t fixed64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | p[k];
    return v;
}


/* A decoded span as the hub carries it: no attribute dict (the wire's attributes are JSON text
 * already), its connection key and peer read once here. Not tracked by the cycle collector:
 * its members are strings, ints, tuples of those and dicts of scalars, so it cannot be in a
 * cycle, and the hub holds hundreds of thousands of them in its link window. */
typedef struct {
    PyObject_HEAD
    PyObject *name, *kind, *start, *end, *status_code, *status_message, *attributes, *resource,
        *trace_id, *span_id, *parent_span_id, *attrs_json, *key, *nat, *peer;
} Row;

#define ROW_FIELDS 15
static const char *row_names[ROW_FIELDS + 1] = {
    "name", "kind", "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
    "attributes", "resource", "trace_id", "span_id", "parent_span_id", "attrs_json", "key", "nat",
    "peer", NULL};

static PyMemberDef row_members[] = {
    {"name", T_OBJECT, offsetof(Row, name), 0, NULL},
    {"kind", T_OBJECT, offsetof(Row, kind), 0, NULL},
    {"start_time_unix_nano", T_OBJECT, offsetof(Row, start), 0, NULL},
    {"end_time_unix_nano", T_OBJECT, offsetof(Row, end), 0, NULL},
    {"status_code", T_OBJECT, offsetof(Row, status_code), 0, NULL},
    {"status_message", T_OBJECT, offsetof(Row, status_message), 0, NULL},
    {"attributes", T_OBJECT, offsetof(Row, attributes), 0,
     "attributes the hub added (the linker's), None until then; the wire's are in attrs_json"},
    {"resource", T_OBJECT, offsetof(Row, resource), 0, NULL},
    {"trace_id", T_OBJECT, offsetof(Row, trace_id), 0, NULL},
    {"span_id", T_OBJECT, offsetof(Row, span_id), 0, NULL},
    {"parent_span_id", T_OBJECT, offsetof(Row, parent_span_id), 0, NULL},
    {"attrs_json", T_OBJECT, offsetof(Row, attrs_json), 0, "the span's attributes as JSON text"},
    {"key", T_OBJECT, offsetof(Row, key), 0, "the connection as its server saw it, or None"},
    {"nat", T_OBJECT, offsetof(Row, nat), 0, "whether conntrack changed the client's key"},
    {"peer", T_OBJECT, offsetof(Row, peer), 0, "capture.store.api.peer_name of a CLIENT/PRODUCER"},
    {NULL},
};

static PyObject **row_slot(Row *r, int k)
{
    return &r->name + k;
}

static void row_dealloc(PyObject *self)
{
    for (int k = 0; k < ROW_FIELDS; k++)
        Py_XDECREF(*row_slot((Row *)self, k));
    Py_TYPE(self)->tp_free(self);
}

static PyObject *row_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *v[ROW_FIELDS] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOOOOOOOOOOOOO", (char **)row_names, &v[0], &v[1],
                                     &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10],
                                     &v[11], &v[12], &v[13], &v[14]))
        return NULL;
    Row *r = (Row *)type->tp_alloc(type, 0);
    if (!r)
        return NULL;
    for (int k = 0; k < ROW_FIELDS; k++)
        *row_slot(r, k) = Py_NewRef(v[k] ? v[k] : Py_None);
    return (PyObject *)r;
}

static PyTypeObject RowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture.export._otlp_wire.Row",
    .tp_basicsize = sizeof(Row),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A decoded span as the hub carries it (see decode_rows).",
    .tp_dealloc = row_dealloc,
    .tp_new = row_new,
    .tp_members = row_members,
};

/* A growable byte buffer (one per decode call: a Python callback may let another thread in). */
typedef struct {
    char *p;
    Py_ssize_t n, cap;
} Out;

/* Room for `want` bytes in all (a column's known or guessed size, so that a batch's buffer is not
 * copied at each doubling from 1 kB). */
static int out_reserve(Out *o, Py_ssize_t want)
{
    if (want <= o->cap)
        return 0;
    char *p = PyMem_Realloc(o->p, want);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    o->p = p;
    o->cap = want;
    return 0;
}

static void out_free(Out *o)
{
    PyMem_Free(o->p);
    o->p = NULL;
    o->n = o->cap = 0;
}

static int out_put(Out *o, const char *s, Py_ssize_t n)
{
    if (o->n + n > o->cap) {
        Py_ssize_t cap = o->cap ? o->cap : 1024;
        while (cap < o->n + n)
            cap *= 2;
        if (out_reserve(o, cap) < 0)
            return -1;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    return 0;
}

/* A JSON string as orjson writes it: UTF-8 kept, quote, backslash and control bytes escaped. */
static int out_json_str(Out *o, const unsigned char *s, Py_ssize_t n)
{
    static const char hexd[] = "0123456789abcdef";
    if (out_put(o, "\"", 1) < 0)
        return -1;
    Py_ssize_t run = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = s[k];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (out_put(o, (const char *)s + run, k - run) < 0)
            return -1;
        run = k + 1;
        char esc[6] = {'\\', 0};
        Py_ssize_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hexd[c >> 4]; esc[5] = hexd[c & 15];
            len = 6;
        }
        if (out_put(o, esc, len) < 0)
            return -1;
    }
    if (out_put(o, (const char *)s + run, n - run) < 0 || out_put(o, "\"", 1) < 0)
        return -1;
    return 0;
}

/* The cache entry of a KeyValue whose value is one string or int (otlp_wire._scalar's common
 * cases) read here; NULL without an error for anything else (the Python reader's). */
static PyObject *row_entry_scalar(const unsigned char *raw, Py_ssize_t len)
{
    if (len < 2 || raw[0] != 0x0A || raw[1] >= 0x80)
        return NULL;
    Py_ssize_t j = 2 + raw[1];
    if (len < j + 2 || raw[j] != 0x12 || raw[j + 1] >= 0x80 || j + 2 + raw[j + 1] != len)
        return NULL;
    Py_ssize_t v = j + 2;
    if (v == len)
        return NULL;
    PyObject *value = NULL;
    unsigned char t = raw[v];
    if (t == 0x0A) {
        if (raw[v + 1] >= 0x80 || v + 2 + raw[v + 1] != len)
            return NULL;
        value = PyUnicode_DecodeUTF8((const char *)raw + v + 2, len - v - 2, "strict");
    } else if (t == 0x18) {
        uint64_t n = 0;
        int shift = 0;
        Py_ssize_t i = v + 1;
        for (;;) {
            if (i >= len || shift > 63)
                return NULL;
            unsigned char c = raw[i++];
            n |= (uint64_t)(c & 0x7F) << shift;
            if (c < 0x80)
                break;
            shift += 7;
        }
        if (i != len)
            return NULL;
        value = PyLong_FromLongLong((long long)n);
    } else {
        return NULL;
    }
    if (!value) {
        PyErr_Clear(); /* the Python reader raises it as the specification does */
        return NULL;
    }
    PyObject *key = PyUnicode_DecodeUTF8((const char *)raw + 2, j - 2, "strict");
    if (!key) {
        PyErr_Clear();
        Py_DECREF(value);
        return NULL;
    }
    Out o = {0};
    int bad = out_json_str(&o, raw + 2, j - 2) < 0 || out_put(&o, ":", 1) < 0;
    if (!bad && t == 0x0A) {
        bad = out_json_str(&o, raw + v + 2, len - v - 2) < 0;
    } else if (!bad) {
        char num[32];
        int n = snprintf(num, sizeof num, "%lld", PyLong_AsLongLong(value));
        bad = out_put(&o, num, n) < 0;
    }
    PyObject *slot = bad ? NULL : PyDict_GetItemWithError(Slots, key);
    PyObject *entry = NULL;
    if (!bad && !PyErr_Occurred()) {
        PyObject *frag = PyBytes_FromStringAndSize(o.p, o.n);
        if (frag)
            entry = PyTuple_Pack(4, key, value, frag, slot ? slot : Py_None);
        Py_XDECREF(frag);
    }
    PyMem_Free(o.p);
    Py_DECREF(key);
    Py_DECREF(value);
    if (!entry && !PyErr_Occurred())
        PyErr_NoMemory();
    return entry;
}

/* The (key, value, JSON member, slot) of one KeyValue: its cache, C, or the Python reader. */
static PyObject *row_entry(const Buf *buf, Py_ssize_t a, Py_ssize_t b)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)buf->b + a, b - a);
    if (!raw)
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(RowCache, raw);
    if (hit) {
        Py_INCREF(hit);
        Py_DECREF(raw);
        return hit;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(raw);
        return NULL;
    }
    hit = row_entry_scalar(buf->b + a, b - a);
    if (!hit && !PyErr_Occurred())
        hit = PyObject_CallOneArg(RowEntryFn, raw);
    if (hit && (!PyTuple_Check(hit) || PyTuple_GET_SIZE(hit) != 4 || !PyBytes_Check(PyTuple_GET_ITEM(hit, 2)))) {
        Py_DECREF(hit);
        PyErr_SetString(PyExc_TypeError, "row entries are (key, value, json bytes, slot)");
        hit = NULL;
    }
    if (hit) {
        if (PyDict_GET_SIZE(RowCache) >= ROW_CACHE_MAX)
            PyDict_Clear(RowCache);
        if (PyDict_SetItem(RowCache, raw, hit) < 0)
            Py_CLEAR(hit);
    }
    Py_DECREF(raw);
    return hit;
}

/* A span's attributes while it is read: their cache entries in wire order. */
typedef struct {
    PyObject **e;
    Py_ssize_t n, cap;
    int dup; /* a key came twice: the JSON text is made from a dict (the last value wins) */
} Attrs;

static int attrs_add(Attrs *at, PyObject *entry)
{
    if (!at->dup) {
        PyObject *key = PyTuple_GET_ITEM(entry, 0);
        Py_hash_t h = PyObject_Hash(key);
        if (h == -1)
            return -1;
        for (Py_ssize_t k = 0; k < at->n; k++) {
            PyObject *other = PyTuple_GET_ITEM(at->e[k], 0);
            if (other == key || (PyObject_Hash(other) == h && PyUnicode_Compare(other, key) == 0)) {
                at->dup = 1;
                break;
            }
        }
        if (PyErr_Occurred())
            return -1;
    }
    if (at->n == at->cap) {
        Py_ssize_t cap = at->cap ? 2 * at->cap : 16;
        PyObject **e = PyMem_Realloc(at->e, cap * sizeof(PyObject *));
        if (!e) {
            PyErr_NoMemory();
            return -1;
        }
        at->e = e;
        at->cap = cap;
    }
    at->e[at->n++] = entry; /* the reference passes to the list */
    return 0;
}

static void attrs_free(Attrs *at)
{
    for (Py_ssize_t k = 0; k < at->n; k++)
        Py_DECREF(at->e[k]);
    PyMem_Free(at->e);
}

/* The attributes as JSON text, and each link slot's value (borrowed from the entries). */
static PyObject *attrs_json(Attrs *at, Out *o, PyObject **slots)
{
    for (Py_ssize_t k = 0; k < at->n; k++) {
        PyObject *slot = PyTuple_GET_ITEM(at->e[k], 3);
        if (slot != Py_None) {
            long s = PyLong_AsLong(slot);
            if (0 <= s && s < N_SLOTS)
                slots[s] = PyTuple_GET_ITEM(at->e[k], 1);
        }
    }
    if (at->dup) {
        PyObject *d = PyDict_New();
        if (!d)
            return NULL;
        for (Py_ssize_t k = 0; k < at->n; k++)
            if (PyDict_SetItem(d, PyTuple_GET_ITEM(at->e[k], 0), PyTuple_GET_ITEM(at->e[k], 1)) < 0) {
                Py_DECREF(d);
                return NULL;
            }
        PyObject *text = PyObject_CallOneArg(JsonFn, d);
        Py_DECREF(d);
        return text;
    }
    o->n = 0;
    if (out_put(o, "{", 1) < 0)
        return NULL;
    for (Py_ssize_t k = 0; k < at->n; k++) {
        PyObject *frag = PyTuple_GET_ITEM(at->e[k], 2);
        if ((k && out_put(o, ",", 1) < 0) || out_put(o, PyBytes_AS_STRING(frag), PyBytes_GET_SIZE(frag)) < 0)
            return NULL;
    }
    if (out_put(o, "}", 1) < 0)
        return NULL;
    return PyUnicode_DecodeUTF8(o->p, o->n, "strict");
}

/* crossnode._key of (transport, client address, port, server address, port): its cache first. */
static PyObject *conn_key(PyObject *t, PyObject *ca, PyObject *cp, PyObject *sa, PyObject *sp)
{
    PyObject *raw = PyTuple_Pack(5, t, ca, cp, sa, sp);
    if (!raw)
        return NULL;
    PyObject *key = PyDict_GetItemWithError(Keys, raw);
    if (key) {
        Py_INCREF(key);
    } else {
        PyErr_Clear(); /* an unhashable value: _key says None */
        key = PyObject_CallOneArg(KeyFn, raw);
    }
    Py_DECREF(raw);
    return key;
}

/* str(addr) or "addr:port" (capture.store.api.peer_name), NULL with no error when falsy. */
static PyObject *peer_of(PyObject **sl)
{
    static const int named[4] = {S_DB_SYSTEM, S_DB_SYSTEM_NAME, S_MESSAGING_SYSTEM, S_RPC_SERVICE};
    for (int k = 0; k < 4; k++) {
        PyObject *v = sl[named[k]];
        if (v) {
            int truth = PyObject_IsTrue(v);
            if (truth < 0)
                return NULL;
            if (truth)
                return PyObject_Str(v);
        }
    }
    PyObject *addr = sl[S_SADDR];
    if (!addr)
        return NULL;
    int truth = PyObject_IsTrue(addr);
    if (truth <= 0)
        return NULL;
    PyObject *port = sl[S_SPORT];
    truth = port ? PyObject_IsTrue(port) : 0;
    if (truth < 0)
        return NULL;
    if (!truth)
        return PyObject_Str(addr);
    return PyUnicode_FromFormat("%S:%S", addr, port);
}

/* The row's key and NAT flag (crossnode.server_key / client_key) and peer. */
static int row_link_fields(Row *r, int kind, int has_parent, PyObject **sl)
{
    PyObject *key = Py_NewRef(Py_None), *nat = Py_NewRef(Py_False), *peer = Py_NewRef(Py_None);
    int server = kind == 2 || kind == 5, client = kind == 3 || kind == 4;
    PyObject *t = sl[S_TRANSPORT] ? sl[S_TRANSPORT] : NULL;
    static PyObject *tcp;
    if (!tcp && !(tcp = PyUnicode_InternFromString("tcp")))
        goto fail;
    if (!t)
        t = tcp;
    if (sl[S_CADDR] && sl[S_CPORT] && sl[S_SADDR] && sl[S_SPORT] && (client || (server && !has_parent))) {
        int natted = client && (sl[S_NAT_SADDR] || sl[S_NAT_CADDR]);
        PyObject *ca = sl[S_CADDR], *cp = sl[S_CPORT], *sa = sl[S_SADDR], *sp = sl[S_SPORT];
        if (natted) {
            ca = sl[S_NAT_CADDR] ? sl[S_NAT_CADDR] : ca;
            cp = sl[S_NAT_CPORT] ? sl[S_NAT_CPORT] : cp;
            sa = sl[S_NAT_SADDR] ? sl[S_NAT_SADDR] : sa;
            sp = sl[S_NAT_SPORT] ? sl[S_NAT_SPORT] : sp;
        }
        PyObject *k = conn_key(t, ca, cp, sa, sp);
        if (!k)
            goto fail;
        Py_SETREF(key, k);
        if (natted && k != Py_None)
            Py_SETREF(nat, Py_NewRef(Py_True));
    }
    if (client) {
        PyObject *p = peer_of(sl);
        if (p)
            Py_SETREF(peer, p);
        else if (PyErr_Occurred())
            goto fail;
    }
    r->key = key;
    r->nat = nat;
    r->peer = peer;
    return 0;
fail:
    Py_DECREF(key);
    Py_DECREF(nat);
    Py_DECREF(peer);
    return -1;
}

/* One span: 1 on a span appended to `out`, 0 when rejected, -1 on an error. With `o` (a
 * scratch buffer), a Row instead of a Span (decode_rows). */
static int span(const Buf *buf, Py_ssize_t i, Py_ssize_t end, PyObject *resource, PyObject *out, Out *o)
{
    Attrs at = {0};
    Py_ssize_t trace_a = 0, trace_n = 0, span_a = 0, span_n = 0, parent_a = 0, parent_n = 0;
    u128 kind = 0, code = 0;
    uint64_t start = 0, stop = 0;
    PyObject *name = Py_NewRef(EMPTY), *message = Py_NewRef(EMPTY), *attrs = o ? NULL : PyDict_New();
    PyObject *args[11] = {NULL};
    int result = -1;
    if (!o && !attrs)
        goto done;
    while (i < end) {
        unsigned char c = buf->b[i];
        if (c == T_ATTR) { /* the most frequent field first */
            Py_ssize_t a, b;
            if (i + 1 >= buf->n) {
                fail("truncated or malformed request: index out of range");
                goto done;
            }
            if (buf->b[i + 1] < 0x80) {
                a = i + 2;
                b = a + buf->b[i + 1];
                if (b > end) {
                    fail("field runs past its span");
                    goto done;
                }
            } else if (len_field(buf, i + 1, end, &a, &b) < 0) {
                goto done;
            }
            if (o) {
                PyObject *entry = row_entry(buf, a, b);
                if (!entry)
                    goto done;
                if (attrs_add(&at, entry) < 0) {
                    Py_DECREF(entry);
                    goto done;
                }
            } else {
                PyObject *hit = keyvalue(buf, a, b);
                if (!hit || put(attrs, hit) < 0)
                    goto done;
            }
            i = b;
            continue;
        }
        if (c == T_START || c == T_END) {
            if (i + 9 > end) {
                fail("field runs past its span");
                goto done;
            }
            uint64_t v = fixed64(buf->b + i + 1);
            if (c == T_START)
                start = v;
            else
                stop = v;
            i += 9;
            continue;
        }
        u128 t = c;
        if (c < 0x80)
            i += 1;
        else if (varint(buf, &i, &t) < 0)
            goto done;
        Py_ssize_t a;
        if (t == T_TRACE || t == T_SPAN || t == T_PARENT || t == T_NAME) {
            if (len_field(buf, i, end, &a, &i) < 0)
                goto done;
            if (t == T_TRACE) {
                trace_a = a;
                trace_n = i - a;
            } else if (t == T_SPAN) {
                span_a = a;
                span_n = i - a;
            } else if (t == T_PARENT) {
                parent_a = a;
                parent_n = i - a;
            } else {
                PyObject *s = utf8(buf, a, i);
                if (!s)
                    goto done;
                Py_SETREF(name, s);
            }
        } else if (t == T_KIND) {
            if (varint(buf, &i, &kind) < 0)
                goto done;
        } else if (t == T_STATUS) {
            if (len_field(buf, i, end, &a, &i) < 0 || status(buf, a, i, &code, &message) < 0)
                goto done;
        } else if (skip(buf, &i, (unsigned)(t & 7), end) < 0) {
            goto done;
        }
    }
    if (i > end) {
        fail("field runs past its span");
        goto done;
    }
    if (trace_n != 16 || span_n != 8 || PyUnicode_GET_LENGTH(name) == 0 || (parent_n && parent_n != 8)) {
        result = 0;
        goto done;
    }
    i128 k = enum_value(kind), s = enum_value(code);
    int kind_i = 0 <= k && k < 6 ? (int)k : 0;
    if (o) {
        PyObject *sl[N_SLOTS] = {NULL};
        Row *r = (Row *)RowType.tp_alloc(&RowType, 0);
        if (!r)
            goto done;
        r->attrs_json = attrs_json(&at, o, sl);
        r->name = Py_NewRef(name);
        r->kind = Py_NewRef(KIND_NAME[kind_i]);
        r->start = PyLong_FromUnsignedLongLong(start);
        r->end = PyLong_FromUnsignedLongLong(stop > start ? stop : start);
        r->status_code = Py_NewRef(STATUS_NAME[0 <= s && s < 3 ? (int)s : 0]);
        r->status_message = Py_NewRef(message);
        r->attributes = Py_NewRef(Py_None);
        r->resource = Py_NewRef(resource);
        r->trace_id = hex(buf->b + trace_a, 16);
        r->span_id = hex(buf->b + span_a, 8);
        r->parent_span_id = parent_n ? hex(buf->b + parent_a, 8) : Py_NewRef(Py_None);
        int bad = !r->attrs_json || !r->start || !r->end || !r->trace_id || !r->span_id || !r->parent_span_id;
        if (bad || row_link_fields(r, kind_i, parent_n != 0, sl) < 0) {
            for (int f = 0; f < ROW_FIELDS; f++) /* what is missing reads as None, then all goes */
                if (!*row_slot(r, f))
                    *row_slot(r, f) = Py_NewRef(Py_None);
            Py_DECREF(r);
            goto done;
        }
        result = PyList_Append(out, (PyObject *)r) < 0 ? -1 : 1;
        Py_DECREF(r);
        goto done;
    }
    args[0] = Py_NewRef(name);
    args[1] = Py_NewRef(KIND_NAME[0 <= k && k < 6 ? (int)k : 0]);
    args[2] = PyLong_FromUnsignedLongLong(start);
    args[3] = PyLong_FromUnsignedLongLong(stop > start ? stop : start);
    args[4] = Py_NewRef(STATUS_NAME[0 <= s && s < 3 ? (int)s : 0]);
    args[5] = Py_NewRef(attrs);
    args[6] = Py_NewRef(resource);
    args[7] = hex(buf->b + trace_a, 16);
    args[8] = hex(buf->b + span_a, 8);
    args[9] = parent_n ? hex(buf->b + parent_a, 8) : Py_NewRef(Py_None);
    args[10] = Py_NewRef(message);
    for (int n = 0; n < 11; n++)
        if (!args[n])
            goto done;
    PyObject *sp = PyObject_Vectorcall(SpanType, args, 11, NULL);
    if (!sp)
        goto done;
    result = PyList_Append(out, sp) < 0 ? -1 : 1;
    Py_DECREF(sp);
done:
    for (int n = 0; n < 11; n++)
        Py_XDECREF(args[n]);
    attrs_free(&at);
    Py_XDECREF(attrs);
    Py_DECREF(name);
    Py_DECREF(message);
    return result;
}

/* One ResourceSpans: its resource first (it may come after the spans on the wire). */
static int resource_spans(const Buf *buf, Py_ssize_t i, Py_ssize_t end, PyObject *out, long *rejected,
                          Out *o)
{
    PyObject *resource = PyDict_New();
    Py_ssize_t cap = 8, nscopes = 0;
    Py_ssize_t *scopes = PyMem_Malloc(cap * 2 * sizeof(Py_ssize_t));
    int r = -1;
    if (!resource || !scopes)
        goto done;
    while (i < end) {
        u128 t;
        Py_ssize_t a, b;
        if (varint(buf, &i, &t) < 0)
            goto done;
        if (t == T_RS_RESOURCE || t == T_RS_SCOPE_SPANS) {
            if (len_field(buf, i, end, &a, &b) < 0)
                goto done;
            i = b;
            if (t == T_RS_RESOURCE) {
                if (attributes(buf, a, b, resource) < 0)
                    goto done;
            } else {
                if (nscopes == cap) {
                    cap *= 2;
                    Py_ssize_t *more = PyMem_Realloc(scopes, cap * 2 * sizeof(Py_ssize_t));
                    if (!more)
                        goto done;
                    scopes = more;
                }
                scopes[2 * nscopes] = a;
                scopes[2 * nscopes + 1] = b;
                nscopes++;
            }
        } else if (skip(buf, &i, (unsigned)(t & 7), end) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t s = 0; s < nscopes; s++) {
        Py_ssize_t j = scopes[2 * s], e = scopes[2 * s + 1];
        while (j < e) {
            u128 t;
            Py_ssize_t a, b;
            if (varint(buf, &j, &t) < 0)
                goto done;
            if (t == T_SS_SPAN) {
                if (len_field(buf, j, e, &a, &b) < 0)
                    goto done;
                j = b;
                int got = span(buf, a, b, resource, out, o);
                if (got < 0)
                    goto done;
                if (got == 0)
                    (*rejected)++;
            } else if (skip(buf, &j, (unsigned)(t & 7), e) < 0) {
                goto done;
            }
        }
    }
    r = 0;
done:
    PyMem_Free(scopes);
    Py_XDECREF(resource);
    return r;
}

static PyObject *decode_any(PyObject *arg, int rows)
{
    if (!SpanType || (rows && !RowCache)) {
        PyErr_SetString(PyExc_RuntimeError, "call setup() first");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Buf buf = {view.buf, view.len};
    PyObject *out = PyList_New(0);
    long rejected = 0;
    Py_ssize_t i = 0, end = buf.n;
    Out scratch = {0}, *o = rows ? &scratch : NULL;
    if (!out)
        goto fail;
    while (i < end) {
        u128 t;
        Py_ssize_t a, b;
        if (varint(&buf, &i, &t) < 0)
            goto fail;
        if (t == T_REQ_RS) {
            if (len_field(&buf, i, end, &a, &b) < 0)
                goto fail;
            i = b;
            if (resource_spans(&buf, a, b, out, &rejected, o) < 0)
                goto fail;
        } else if (skip(&buf, &i, (unsigned)(t & 7), end) < 0) {
            goto fail;
        }
    }
    PyBuffer_Release(&view);
    PyMem_Free(scratch.p);
    return Py_BuildValue("(Nl)", out, rejected);
fail:
    PyBuffer_Release(&view);
    PyMem_Free(scratch.p);
    Py_XDECREF(out);
    return NULL;
}


/* ---- ColBuf: a column buffer handed over as it was written --------------------------------
 * The store's columns are written for every append and dropped after its insert. Copied into bytes,
 * a buffer as large as the agent's mapping threshold (guardian/heap.py) was mapped twice, each page
 * faulted in when written and again in the copy (perf of `guardian agent` at hey 10k: a tenth of
 * the worker's time). A ColBuf owns the buffer it was written into and exposes it read-only (Arrow
 * takes it without a copy); freed, it frees the buffer. */
typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t n;
} ColBuf;

static void colbuf_dealloc(ColBuf *self)
{
    PyMem_Free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int colbuf_getbuffer(ColBuf *self, Py_buffer *view, int flags)
{
    static char empty[1];
    return PyBuffer_FillInfo(view, (PyObject *)self, self->p ? self->p : empty, self->n, 1, flags);
}

static Py_ssize_t colbuf_len(ColBuf *self)
{
    return self->n;
}

static PyBufferProcs colbuf_as_buffer = {(getbufferproc)colbuf_getbuffer, NULL};
static PySequenceMethods colbuf_as_sequence = {.sq_length = (lenfunc)colbuf_len};

static PyTypeObject ColBufType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture.export._otlp_wire.ColBuf",
    .tp_doc = "A column's bytes, read-only (a buffer), as the columns were written.",
    .tp_basicsize = sizeof(ColBuf),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)colbuf_dealloc,
    .tp_as_buffer = &colbuf_as_buffer,
    .tp_as_sequence = &colbuf_as_sequence,
};

/* The first `n` bytes of `o` as a ColBuf, which takes its memory (o is left empty). */
static PyObject *out_hand(Out *o, Py_ssize_t n)
{
    ColBuf *b = PyObject_New(ColBuf, &ColBufType);
    if (!b)
        return NULL;
    b->p = o->p;
    b->n = o->p ? n : 0;
    o->p = NULL;
    o->n = o->cap = 0;
    return (PyObject *)b;
}

/* ---- Rows -> Arrow column buffers (capture.store.columns.arrow_rows) -------------------- */

typedef struct {
    Out data, offsets, valid;
    Py_ssize_t nulls;
} StrCol;

static int col_str(StrCol *c, Py_ssize_t row, PyObject *v, int nulls)
{
    if (v == Py_None) {
        if (nulls) {
            c->nulls++;
        } else {
            v = EMPTY;
        }
    }
    if (v != Py_None) {
        if (!PyUnicode_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "a string column holds a non-string");
            return -1;
        }
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(v, &n);
        if (!u || out_put(&c->data, u, n) < 0)
            return -1;
        c->valid.p[row >> 3] |= (char)(1 << (row & 7));
    }
    if (c->data.n > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a string column past 2 GiB");
        return -1;
    }
    int32_t off = (int32_t)c->data.n;
    return out_put(&c->offsets, (const char *)&off, 4);
}

/* ---- ids as 64-bit keys (DuckDB's store: capture.store.columns.ID_COLUMNS) ------------ */

/* a byte's value as a lowercase hex digit, 0x10 when it is not one (HEX_NOT) */
#define HEX_NOT 0x10
static unsigned char HEX[256];

static void hex_init(void)
{
    memset(HEX, HEX_NOT, sizeof HEX);
    for (int d = 0; d < 10; d++)
        HEX['0' + d] = (unsigned char)d;
    for (int d = 0; d < 6; d++)
        HEX['a' + d] = (unsigned char)(10 + d);
}

/* 16 lowercase hex digits as 64 bits; 0 when one is not such a digit. One table lookup per
 * digit and one test per half instead of a range check and a branch per digit (three ids per
 * span, 64 digits): with the sized buffers, columns() 0.74 -> 0.50 µs per span (docs/benchmarks.md). */
static inline int hex16(const unsigned char *s, uint64_t *key)
{
    uint64_t v = 0;
    unsigned bad = 0;
    for (int k = 0; k < 16; k++) {
        unsigned d = HEX[s[k]];
        bad |= d;
        v = v << 4 | (d & 15);
    }
    *key = v;
    return !(bad & HEX_NOT);
}

/* exactly `digits` (16 or 32) lowercase hex digits as one or two 64-bit halves; 0 when not */
static int hex_key(const char *s, Py_ssize_t n, int digits, uint64_t key[2])
{
    if (n != digits)
        return 0;
    key[1] = 0;
    const unsigned char *u = (const unsigned char *)s;
    return hex16(u, &key[0]) && (digits == 16 || hex16(u + 16, &key[1]));
}

/* An id column: its key halves (NULL where there is no id), and the id's text where it is not
 * canonical (lowercase hex of the OTLP width), its keys then left 0 for Python to fill. */
typedef struct {
    Out hi, lo, valid;
    Py_ssize_t nulls;
    StrCol text;
} IdCol;

static int col_id(IdCol *c, Py_ssize_t row, PyObject *v, int digits, int empty_null)
{
    uint64_t key[2] = {0, 0};
    int canonical = 0, null = v == Py_None;
    if (!null) {
        if (!PyUnicode_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "an id column holds a non-string");
            return -1;
        }
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(v, &n);
        if (!u)
            return -1;
        null = empty_null && n == 0;
        canonical = !null && hex_key(u, n, digits, key);
    }
    if (null)
        c->nulls++;
    else
        c->valid.p[row >> 3] |= (char)(1 << (row & 7));
    if (out_put(&c->hi, (const char *)&key[0], 8) < 0 || (digits == 32 && out_put(&c->lo, (const char *)&key[1], 8) < 0))
        return -1;
    return col_str(&c->text, row, null || canonical ? Py_None : v, 1);
}

/* A validity bitmap of vbytes bytes, every row null until set. */
static int valid_init(Out *valid, Py_ssize_t vbytes)
{
    valid->p = PyMem_Calloc(vbytes ? vbytes : 1, 1);
    if (!valid->p) {
        PyErr_NoMemory();
        return -1;
    }
    valid->n = valid->cap = vbytes;
    return 0;
}

/* A string column of n rows: its offsets sized for them (its data grows, see data_reserve). */
static int col_init(StrCol *c, Py_ssize_t n, Py_ssize_t vbytes)
{
    int32_t zero = 0;
    if (out_reserve(&c->offsets, 4 * (n + 1)) < 0 || out_put(&c->offsets, (const char *)&zero, 4) < 0)
        return -1;
    return valid_init(&c->valid, vbytes);
}

/* An id column of n rows: its key halves sized for them. */
static int id_init(IdCol *c, Py_ssize_t n, Py_ssize_t vbytes, int digits)
{
    if (col_init(&c->text, n, vbytes) < 0 || out_reserve(&c->hi, 8 * n) < 0
            || (digits == 32 && out_reserve(&c->lo, 8 * n) < 0))
        return -1;
    return valid_init(&c->valid, vbytes);
}

/* A string column's data sized for n rows like its first one (and a quarter more), once that row
 * is in: a batch's rows are much alike (the same protocol's attributes). At most DATA_GUESS_MAX
 * (a first row of large attributes must not size the whole batch); past that it doubles. */
#define DATA_GUESS_MAX (4 << 20)
static int data_reserve(StrCol *c, Py_ssize_t n)
{
    Py_ssize_t first = c->data.n;
    if (!first || first > DATA_GUESS_MAX / n)
        return first ? out_reserve(&c->data, DATA_GUESS_MAX) : 0;
    Py_ssize_t want = first * n + first * n / 4;
    return out_reserve(&c->data, want < DATA_GUESS_MAX ? want : DATA_GUESS_MAX);
}

static void col_free(StrCol *c)
{
    out_free(&c->data);
    out_free(&c->offsets);
    out_free(&c->valid);
}

static void id_free(IdCol *c)
{
    out_free(&c->hi);
    out_free(&c->lo);
    out_free(&c->valid);
    col_free(&c->text);
}

/* ("s", offsets, data, validity or None, null count): the column's buffers handed over (ColBuf) */
static PyObject *str_item(StrCol *col, Py_ssize_t vbytes)
{
    if (col->nulls)
        return Py_BuildValue("(sNNNn)", "s", out_hand(&col->offsets, col->offsets.n), out_hand(&col->data, col->data.n),
                             out_hand(&col->valid, vbytes), col->nulls);
    return Py_BuildValue("(sNNOn)", "s", out_hand(&col->offsets, col->offsets.n), out_hand(&col->data, col->data.n),
                         Py_None, (Py_ssize_t)0);
}

/* ("u", values, validity or None, null count): the values handed over; the validity (n/8 bytes, an id
 * column's own, which a trace id's two halves share) copied */
static PyObject *key_item(Out *keys, IdCol *c, Py_ssize_t vbytes)
{
    if (c->nulls)
        return Py_BuildValue("(sNy#n)", "u", out_hand(keys, keys->n), c->valid.p, vbytes, c->nulls);
    return Py_BuildValue("(sNOn)", "u", out_hand(keys, keys->n), Py_None, (Py_ssize_t)0);
}

/* ids(strs, digits, empty_null): one id column (a list of str or None) as its key halves and
 * fallback text: [hi, lo (digits 32 only), text] items as columns() gives them. */
static PyObject *ids(PyObject *self, PyObject *args)
{
    PyObject *strs;
    int digits, empty_null;
    if (!PyArg_ParseTuple(args, "O!ip", &PyList_Type, &strs, &digits, &empty_null))
        return NULL;
    if (digits != 16 && digits != 32) {
        PyErr_SetString(PyExc_ValueError, "ids are 16 or 32 hex digits");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(strs), vbytes = (n + 7) / 8;
    IdCol c;
    PyObject *result = NULL;
    memset(&c, 0, sizeof c);
    if (id_init(&c, n, vbytes, digits) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        if (col_id(&c, i, PyList_GET_ITEM(strs, i), digits, empty_null) < 0)
            goto done;
    if (digits == 32)
        result = Py_BuildValue("[NNN]", key_item(&c.hi, &c, vbytes), key_item(&c.lo, &c, vbytes), str_item(&c.text, vbytes));
    else
        result = Py_BuildValue("[NN]", key_item(&c.hi, &c, vbytes), str_item(&c.text, vbytes));
done:
    id_free(&c);
    return result;
}

/* columns(rows, resource, attributes, nulls[, keyed]): the store's columns as Arrow buffers:
 * ("s", offsets, data, validity or None, null count) per string column, ("i", values) per int64
 * one and ("u", values, validity or None, null count) per uint64 one. Not keyed: capture.store.
 * columns COLUMNS (ClickHouse's, ids as text); `resource(dict)` gives (JSON text, service).
 * Keyed: ID_COLUMNS (DuckDB's, ids as keys); `resource(dict)` gives (resource key, service).
 * `resource` is asked once per resource; `attributes(row)` gives the attributes text of a row the
 * hub added some to. */
enum { C_TRACE, C_SPAN, C_PARENT, C_NAME, C_KIND, C_STATUS, C_MESSAGE, C_SERVICE, C_PEER, C_ATTRS,
       C_RESOURCE, N_STR };

static PyObject *columns(PyObject *self, PyObject *args)
{
    PyObject *rows, *resource_fn, *attrs_fn;
    int nulls, keyed = 0;
    if (!PyArg_ParseTuple(args, "O!OOp|p", &PyList_Type, &rows, &resource_fn, &attrs_fn, &nulls, &keyed))
        return NULL;
    PyObject *resources = PyDict_New(); /* id(resource) -> resource_fn(resource) */
    if (!resources)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows), vbytes = (n + 7) / 8;
    StrCol c[N_STR];
    IdCol id[3];
    Out ints[4] = {{0}};
    PyObject *result = NULL, *last_res = NULL, *res_json = NULL, *res_service = NULL;
    memset(c, 0, sizeof c);
    memset(id, 0, sizeof id);
    for (int k = 0; k < N_STR; k++)
        if (col_init(&c[k], n, vbytes) < 0)
            goto done;
    for (int k = 0; k < 3; k++)
        if (keyed && id_init(&id[k], n, vbytes, k ? 16 : 32) < 0)
            goto done;
    for (int k = 0; k < 4; k++)
        if (out_reserve(&ints[k], 8 * n) < 0)
            goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(rows, i);
        if (Py_TYPE(o) != &RowType) {
            PyErr_SetString(PyExc_TypeError, "columns() takes Rows");
            goto done;
        }
        Row *r = (Row *)o;
        if (r->resource != last_res) {
            PyObject *rid = PyLong_FromVoidPtr(r->resource);
            PyObject *hit = rid ? PyDict_GetItemWithError(resources, rid) : NULL;
            if (rid && !hit && !PyErr_Occurred()) {
                hit = PyObject_CallOneArg(resource_fn, r->resource);
                if (hit && PyDict_SetItem(resources, rid, hit) < 0)
                    Py_CLEAR(hit);
                Py_XDECREF(hit); /* the dict holds it */
            }
            Py_XDECREF(rid);
            if (!hit || !PyTuple_Check(hit) || PyTuple_GET_SIZE(hit) != 2
                    || (keyed && !PyLong_Check(PyTuple_GET_ITEM(hit, 0)))) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, keyed ? "resource columns are (key, service)"
                                                           : "resource columns are (JSON text, service)");
                goto done;
            }
            last_res = r->resource;
            res_json = PyTuple_GET_ITEM(hit, 0);
            res_service = PyTuple_GET_ITEM(hit, 1);
        }
        PyObject *attrs = r->attributes == Py_None ? Py_NewRef(r->attrs_json) : PyObject_CallOneArg(attrs_fn, o);
        if (!attrs)
            goto done;
        PyObject *v[N_STR] = {r->trace_id, r->span_id, r->parent_span_id, r->name, r->kind, r->status_code,
                              r->status_message, res_service, r->peer, attrs, res_json};
        int bad = 0;
        for (int k = 0; k < N_STR && !bad; k++) {
            if (keyed && (k <= C_PARENT || k == C_RESOURCE))
                continue;
            bad = col_str(&c[k], i, v[k], nulls && (k == C_PARENT || k == C_PEER)) < 0;
        }
        if (keyed && !bad)
            bad = col_id(&id[0], i, r->trace_id, 32, 0) < 0 || col_id(&id[1], i, r->span_id, 16, 0) < 0
                  || col_id(&id[2], i, r->parent_span_id, 16, 1) < 0;
        Py_DECREF(attrs);
        if (bad)
            goto done;
        long long start = PyLong_AsLongLong(r->start), end = PyLong_AsLongLong(r->end);
        if ((start == -1 || end == -1) && PyErr_Occurred())
            goto done;
        long long dur = end - start;
        if (out_put(&ints[0], (const char *)&start, 8) < 0 || out_put(&ints[1], (const char *)&end, 8) < 0
                || out_put(&ints[2], (const char *)&dur, 8) < 0)
            goto done;
        if (keyed) {
            long long key = PyLong_AsLongLong(res_json);
            if ((key == -1 && PyErr_Occurred()) || out_put(&ints[3], (const char *)&key, 8) < 0)
                goto done;
        }
        if (i == 0)
            for (int k = 0; k < N_STR; k++)
                if (data_reserve(&c[k], n) < 0)
                    goto done;
    }
    if (keyed) {
        /* In ID_COLUMNS order: trace_hi, trace_lo, span_key, parent_key, name, kind, start, end,
         * duration, status, message, service, peer, attributes, resource_key, trace_text,
         * span_text, parent_text. */
        result = Py_BuildValue("[NNNNNNNNNNNNNNNNNN]", key_item(&id[0].hi, &id[0], vbytes),
                               key_item(&id[0].lo, &id[0], vbytes), key_item(&id[1].hi, &id[1], vbytes),
                               key_item(&id[2].hi, &id[2], vbytes), str_item(&c[C_NAME], vbytes),
                               str_item(&c[C_KIND], vbytes), Py_BuildValue("(sN)", "i", out_hand(&ints[0], ints[0].n)),
                               Py_BuildValue("(sN)", "i", out_hand(&ints[1], ints[1].n)),
                               Py_BuildValue("(sN)", "i", out_hand(&ints[2], ints[2].n)),
                               str_item(&c[C_STATUS], vbytes), str_item(&c[C_MESSAGE], vbytes),
                               str_item(&c[C_SERVICE], vbytes), str_item(&c[C_PEER], vbytes),
                               str_item(&c[C_ATTRS], vbytes),
                               Py_BuildValue("(sN)", "i", out_hand(&ints[3], ints[3].n)),
                               str_item(&id[0].text, vbytes), str_item(&id[1].text, vbytes),
                               str_item(&id[2].text, vbytes));
        goto done;
    }
    /* In COLUMNS order: trace, span, parent, name, kind, start, end, duration, status, message,
     * service, peer, attributes, resource. */
    static const int order[14] = {C_TRACE, C_SPAN, C_PARENT, C_NAME, C_KIND, -1, -2, -3, C_STATUS,
                                  C_MESSAGE, C_SERVICE, C_PEER, C_ATTRS, C_RESOURCE};
    result = PyList_New(14);
    if (!result)
        goto done;
    for (int k = 0; k < 14; k++) {
        PyObject *item;
        if (order[k] < 0) {
            Out *col = &ints[-order[k] - 1];
            item = Py_BuildValue("(sN)", "i", out_hand(col, col->n));
        } else {
            item = str_item(&c[order[k]], vbytes);
        }
        if (!item) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, k, item);
    }
done:
    for (int k = 0; k < N_STR; k++)
        col_free(&c[k]);
    for (int k = 0; k < 3; k++)
        id_free(&id[k]);
    for (int k = 0; k < 4; k++)
        out_free(&ints[k]);
    Py_DECREF(resources);
    return result;
}

static PyObject *decode(PyObject *self, PyObject *arg)
{
    return decode_any(arg, 0);
}

static PyObject *decode_rows(PyObject *self, PyObject *arg)
{
    return decode_any(arg, 1);
}

static PyObject *setup_rows(PyObject *self, PyObject *args)
{
    PyObject *cache, *entry, *slots, *keys, *key, *json;
    if (!PyArg_ParseTuple(args, "O!OO!O!OO", &PyDict_Type, &cache, &entry, &PyDict_Type, &slots,
                          &PyDict_Type, &keys, &key, &json))
        return NULL;
    Py_XSETREF(RowCache, Py_NewRef(cache));
    Py_XSETREF(RowEntryFn, Py_NewRef(entry));
    Py_XSETREF(Slots, Py_NewRef(slots));
    Py_XSETREF(Keys, Py_NewRef(keys));
    Py_XSETREF(KeyFn, Py_NewRef(key));
    Py_XSETREF(JsonFn, Py_NewRef(json));
    Py_RETURN_NONE;
}

static PyObject *setup(PyObject *self, PyObject *args)
{
    PyObject *span_type, *cache, *kv, *err;
    if (!PyArg_ParseTuple(args, "OO!OO", &span_type, &PyDict_Type, &cache, &kv, &err))
        return NULL;
    Py_XSETREF(SpanType, Py_NewRef(span_type));
    Py_XSETREF(Cache, Py_NewRef(cache));
    Py_XSETREF(KeyValueFn, Py_NewRef(kv));
    Py_XSETREF(DecodeErr, Py_NewRef(err));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Span, kv_cache, keyvalue, DecodeError): what decode() builds and calls."},
    {"decode", decode, METH_O, "decode(body) -> (spans, rejected): see capture.export.otlp_wire."},
    {"setup_rows", setup_rows, METH_VARARGS,
     "setup_rows(entry_cache, entry, slots, keys, key, json): what decode_rows() reads with."},
    {"columns", columns, METH_VARARGS,
     "columns(rows, resource, attributes, nulls[, keyed]) -> Arrow buffers per column (see capture.store.columns)."},
    {"ids", ids, METH_VARARGS, "ids(strs, digits, empty_null) -> an id column's key halves and fallback text."},
    {"decode_rows", decode_rows, METH_O,
     "decode_rows(body) -> (rows, rejected): decode() as Rows (see capture.export.otlp_wire)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture.export._otlp_wire",
                                    "OTLP wire decode of capture/export/otlp_wire.py, in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__otlp_wire(void)
{
    static const char *kinds[6] = {"INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"};
    static const char *codes[3] = {"UNSET", "OK", "ERROR"};
    hex_init();
    for (int k = 0; k < 6; k++)
        if (!(KIND_NAME[k] = PyUnicode_InternFromString(kinds[k])))
            return NULL;
    for (int k = 0; k < 3; k++)
        if (!(STATUS_NAME[k] = PyUnicode_InternFromString(codes[k])))
            return NULL;
    if (!(EMPTY = PyUnicode_FromString("")))
        return NULL;
    if (PyType_Ready(&ColBufType) < 0)
        return NULL;
    if (PyType_Ready(&RowType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m || PyModule_AddObjectRef(m, "Row", (PyObject *)&RowType) < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
