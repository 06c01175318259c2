/* capture._spanjson: `guardian capture --json` lines of a batch of spans, written in C.
 *
 * capture/span.py (Span.to_dict + orjson) stays the specification: lines() writes the same bytes
 * for the values it knows (exact str, int within 64 bits, bool, None, dict with str keys, list,
 * tuple) and asks the span's own json_line() for any span holding something else (floats, big
 * ints, other types, strings with lone surrogates, deep nesting). It reads a slots Span's fields
 * from their slots, as capture/_fastpath.c writes them; it never changes a span. A bytes item in
 * the batch is a line capture/_fastpath.c wrote for a span it never made (Table.as_lines): copied. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "json_write.h"

#define FIELDS 11
#define MAX_KEPT (4 << 20) /* the buffer kept between batches, at most */

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
        if (PyBytes_CheckExact(s)) { /* a line capture/_fastpath.c wrote already */
            if (reserve(b, PyBytes_GET_SIZE(s)) < 0) {
                rc = -1;
                break;
            }
            put(b, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s));
            continue;
        }
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
