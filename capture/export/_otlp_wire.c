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
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef __int128 i128;

static PyObject *SpanType, *Cache, *KeyValueFn, *DecodeErr;
static PyObject *KIND_NAME[6], *STATUS_NAME[3], *EMPTY;

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

/* One span: 1 on a span appended to `out`, 0 when rejected, -1 on an error. */
static int span(const Buf *buf, Py_ssize_t i, Py_ssize_t end, PyObject *resource, PyObject *out)
{
    Py_ssize_t trace_a = 0, trace_n = 0, span_a = 0, span_n = 0, parent_a = 0, parent_n = 0;
    u128 kind = 0, code = 0;
    uint64_t start = 0, stop = 0;
    PyObject *name = Py_NewRef(EMPTY), *message = Py_NewRef(EMPTY), *attrs = PyDict_New();
    PyObject *args[11] = {NULL};
    int result = -1;
    if (!attrs)
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
            PyObject *hit = keyvalue(buf, a, b);
            if (!hit || put(attrs, hit) < 0)
                goto done;
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
    Py_XDECREF(attrs);
    Py_DECREF(name);
    Py_DECREF(message);
    return result;
}

/* One ResourceSpans: its resource first (it may come after the spans on the wire). */
static int resource_spans(const Buf *buf, Py_ssize_t i, Py_ssize_t end, PyObject *out, long *rejected)
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
                int got = span(buf, a, b, resource, out);
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

static PyObject *decode(PyObject *self, PyObject *arg)
{
    if (!SpanType) {
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
            if (resource_spans(&buf, a, b, out, &rejected) < 0)
                goto fail;
        } else if (skip(&buf, &i, (unsigned)(t & 7), end) < 0) {
            goto fail;
        }
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nl)", out, rejected);
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    return NULL;
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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture.export._otlp_wire",
                                    "OTLP wire decode of capture/export/otlp_wire.py, in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__otlp_wire(void)
{
    static const char *kinds[6] = {"INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"};
    static const char *codes[3] = {"UNSET", "OK", "ERROR"};
    for (int k = 0; k < 6; k++)
        if (!(KIND_NAME[k] = PyUnicode_InternFromString(kinds[k])))
            return NULL;
    for (int k = 0; k < 3; k++)
        if (!(STATUS_NAME[k] = PyUnicode_InternFromString(codes[k])))
            return NULL;
    if (!(EMPTY = PyUnicode_FromString("")))
        return NULL;
    return PyModule_Create(&module);
}
