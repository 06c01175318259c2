/* capture._rows: capture.rows.to_rows in C (the agent's spans as compact rows at its ingest queue).
 *
 * capture/rows.py stays the specification: for each Span, the same Row (capture.export._otlp_wire)
 * with its attributes as the JSON text encode_json gives (capture/json_write.h writes orjson's
 * bytes for the values it knows), its linker facts (connection key, thread, traceparent; shared
 * through rows.py's table when no traceparent) and its peer, as rows.py computes them. A span
 * holding anything else (a value the writer leaves to orjson, a type other than the bound Span)
 * is made by rows.py's own one-span function. It reads a Span's fields from their slots and never
 * changes a span. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "json_write.h"

#define SPAN_FIELDS 11
#define ROW_FIELDS 15
enum { S_NAME, S_KIND, S_START, S_END, S_STATUS, S_ATTRS, S_RESOURCE, S_TRACE, S_SPAN, S_PARENT, S_MESSAGE };
static const char *const SPAN_NAMES[SPAN_FIELDS] = {"name", "kind", "start_time_unix_nano", "end_time_unix_nano",
                                                    "status_code", "attributes", "resource", "trace_id",
                                                    "span_id", "parent_span_id", "status_message"};
/* Row's fields in the order its constructor takes them */
static const char *const ROW_NAMES[ROW_FIELDS] = {"name", "kind", "start_time_unix_nano", "end_time_unix_nano",
                                                  "status_code", "status_message", "attributes", "resource",
                                                  "trace_id", "span_id", "parent_span_id", "attrs_json", "key",
                                                  "nat", "peer"};

static PyTypeObject *span_type, *row_type;
static Py_ssize_t span_off[SPAN_FIELDS], row_off[ROW_FIELDS];
static PyObject *one_row;  /* rows.py's one-span Row maker */
static PyObject *facts;    /* rows.py's shared facts table (borrowed during a rows() call) */
static Py_ssize_t facts_max;
static unsigned long long facts_clears; /* times the table was full and cleared (rows.py facts_clears) */
static PyObject *K_caddr, *K_cport, *K_saddr, *K_sport, *K_transport, *K_goroutine, *K_thread, *K_traceparent,
    *S_tcp, *S_g, *S_t, *S_empty, *S_CLIENT, *S_PRODUCER, *K_server_address, *K_server_port;
static PyObject *PEER_KEYS[4];

static int offsets_of(PyTypeObject *type, const char *const *names, int n, int member_type, Py_ssize_t *out)
{
    if (type->tp_dict == NULL)
        return 0;
    for (int k = 0; k < n; k++) {
        PyObject *d = PyDict_GetItemString(type->tp_dict, names[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) || ((PyMemberDescrObject *)d)->d_member->type != member_type)
            return 0;
        out[k] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    return 1;
}

/* bind(Span, Row, one_row): what rows() makes and how; False: it cannot (no slots). */
static PyObject *bind(PyObject *self, PyObject *args)
{
    PyObject *span, *row, *fn;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyType_Type, &span, &PyType_Type, &row, &fn))
        return NULL;
    if (!offsets_of((PyTypeObject *)span, SPAN_NAMES, SPAN_FIELDS, T_OBJECT_EX, span_off) ||
        !offsets_of((PyTypeObject *)row, ROW_NAMES, ROW_FIELDS, T_OBJECT, row_off))
        Py_RETURN_FALSE;
    Py_XSETREF(span_type, (PyTypeObject *)Py_NewRef(span));
    Py_XSETREF(row_type, (PyTypeObject *)Py_NewRef(row));
    Py_XSETREF(one_row, Py_NewRef(fn));
    Py_RETURN_TRUE;
}

static PyObject *get(PyObject *d, PyObject *key) /* borrowed, NULL when absent (check PyErr_Occurred) */
{
    return PyDict_GetItemWithError(d, key);
}

/* (str(addr), int(port)) */
static PyObject *end_of(PyObject *addr, PyObject *port)
{
    PyObject *a = PyObject_Str(addr), *p = a ? PyNumber_Long(port) : NULL, *t = NULL;
    if (p != NULL && !PyLong_CheckExact(p)) /* int() of an int subclass or of a str: what int() gives */
        Py_SETREF(p, PyNumber_Long(p));
    if (p != NULL)
        t = PyTuple_Pack(2, a, p);
    Py_XDECREF(a);
    Py_XDECREF(p);
    return t;
}

/* linker.conn_key of attributes `a` (new ref; Py_None when an end is missing) */
static PyObject *conn_key(PyObject *a)
{
    PyObject *ca = get(a, K_caddr), *cp = ca ? get(a, K_cport) : NULL, *sa = cp ? get(a, K_saddr) : NULL,
             *sp = sa ? get(a, K_sport) : NULL;
    if (sp == NULL || ca == Py_None || cp == Py_None || sa == Py_None || sp == Py_None)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *e1 = end_of(ca, cp), *e2 = e1 ? end_of(sa, sp) : NULL, *key = NULL;
    if (e2 != NULL) {
        int lt = PyObject_RichCompareBool(e2, e1, Py_LT); /* sorted([e1, e2]) */
        PyObject *transport = lt < 0 ? NULL : get(a, K_transport);
        if (lt >= 0 && (transport != NULL || !PyErr_Occurred()))
            key = PyTuple_Pack(3, transport ? transport : S_tcp, lt ? e2 : e1, lt ? e1 : e2);
    }
    Py_XDECREF(e1);
    Py_XDECREF(e2);
    return key;
}

/* linker._thread of attributes `a` (new ref) */
static PyObject *thread_of(PyObject *a)
{
    PyObject *v = get(a, K_goroutine);
    if (v != NULL && v != Py_None)
        return PyTuple_Pack(2, S_g, v);
    if (v == NULL && PyErr_Occurred())
        return NULL;
    v = get(a, K_thread);
    if (v != NULL && v != Py_None)
        return PyTuple_Pack(2, S_t, v);
    return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
}

/* rows.py's _facts_of: (connection key, thread, traceparent), shared when there is no traceparent */
static PyObject *facts_of(PyObject *a)
{
    PyObject *tp = get(a, K_traceparent);
    if (tp == NULL && PyErr_Occurred())
        return NULL;
    PyObject *key = conn_key(a), *th = key ? thread_of(a) : NULL, *f = NULL;
    if (th != NULL)
        f = PyTuple_Pack(3, key, th, tp ? tp : Py_None);
    Py_XDECREF(key);
    Py_XDECREF(th);
    if (f == NULL || (tp != NULL && tp != Py_None))
        return f;
    PyObject *shared = PyDict_GetItemWithError(facts, f);
    if (shared != NULL) {
        Py_DECREF(f);
        return Py_NewRef(shared);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(f);
        return NULL;
    }
    if (PyDict_GET_SIZE(facts) >= facts_max) {
        PyDict_Clear(facts);
        facts_clears++;
    }
    if (PyDict_SetItem(facts, f, f) < 0)
        Py_CLEAR(f);
    return f;
}

/* capture.store.api.peer_name for a CLIENT/PRODUCER span, Py_None for other kinds */
static PyObject *peer_of(PyObject *kind, PyObject *a)
{
    if (!PyUnicode_Check(kind) || (PyUnicode_Compare(kind, S_CLIENT) != 0 && PyUnicode_Compare(kind, S_PRODUCER) != 0))
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    for (int k = 0; k < 4; k++) {
        PyObject *v = get(a, PEER_KEYS[k]);
        if (v == NULL) {
            if (PyErr_Occurred())
                return NULL;
            continue;
        }
        int t = PyObject_IsTrue(v);
        if (t < 0)
            return NULL;
        if (t)
            return PyObject_Str(v);
    }
    PyObject *addr = get(a, K_server_address);
    int t = addr ? PyObject_IsTrue(addr) : 0;
    if (t <= 0)
        return t < 0 || PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *port = get(a, K_server_port);
    int tp = port ? PyObject_IsTrue(port) : 0;
    if (tp < 0 || (port == NULL && PyErr_Occurred()))
        return NULL;
    if (!tp)
        return PyObject_Str(addr);
    PyObject *x = PyObject_Format(addr, S_empty), *y = x ? PyObject_Format(port, S_empty) : NULL, *out = NULL;
    if (y != NULL)
        out = PyUnicode_FromFormat("%U:%U", x, y);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return out;
}

static struct buf json; /* kept between calls */

/* The Row of one Span (new ref), or NULL with an error; *other: left to rows.py (no error). */
static PyObject *row_of(PyObject *s, int *other)
{
    PyObject *f[SPAN_FIELDS];
    for (int k = 0; k < SPAN_FIELDS; k++)
        if ((f[k] = *(PyObject **)((char *)s + span_off[k])) == NULL)
            return (*other = 1), NULL;
    PyObject *a = f[S_ATTRS];
    if (!PyDict_CheckExact(a))
        return (*other = 1), NULL;
    json.n = 0;
    int rc = put_value(&json, a, 0);
    if (rc < 0)
        return NULL;
    if (rc == OTHER)
        return (*other = 1), NULL;
    PyObject *text = PyUnicode_DecodeUTF8(json.p, json.n, "strict");
    if (text == NULL)
        return NULL;
    PyObject *key = facts_of(a), *peer = key ? peer_of(f[S_KIND], a) : NULL, *msg = NULL;
    if (peer != NULL) {
        int t = PyObject_IsTrue(f[S_MESSAGE]);
        msg = t < 0 ? NULL : Py_NewRef(t ? f[S_MESSAGE] : S_empty);
    }
    PyObject *row = msg ? row_type->tp_alloc(row_type, 0) : NULL;
    if (row != NULL) {
        PyObject *v[ROW_FIELDS] = {f[S_NAME], f[S_KIND], f[S_START], f[S_END], f[S_STATUS], msg, Py_None,
                                   f[S_RESOURCE], f[S_TRACE], f[S_SPAN], f[S_PARENT], text, key, Py_None, peer};
        for (int k = 0; k < ROW_FIELDS; k++)
            *(PyObject **)((char *)row + row_off[k]) = Py_NewRef(v[k]);
    }
    Py_DECREF(text);
    Py_XDECREF(key);
    Py_XDECREF(peer);
    Py_XDECREF(msg);
    return row;
}

static PyObject *rows(PyObject *self, PyObject *args)
{
    PyObject *arg;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &arg, &PyDict_Type, &facts, &facts_max))
        return NULL;
    if (row_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "rows() before bind()");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(arg, i), *r = NULL;
        if (Py_TYPE(s) == row_type) { /* made as a row already (ConnTracker.spans_as_rows) */
            Py_INCREF(s);
            PyList_SET_ITEM(out, i, s);
            continue;
        }
        int other = Py_TYPE(s) != span_type;
        if (!other)
            r = row_of(s, &other);
        if (other)
            r = PyObject_CallOneArg(one_row, s);
        if (r == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, r);
    }
    if (json.cap > (1 << 20)) { /* a huge value once: not kept */
        PyMem_Free(json.p);
        json = (struct buf){NULL, 0, 0};
    }
    return out;
}

static PyObject *clears(PyObject *self, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(facts_clears);
}


/* ---- pymalloc's arenas kept for reuse (capture.rows.keep_arenas) ----------------------------
 * The capture thread makes a span's row and its strings; the agent's worker frees them a few
 * seconds later, a batch at a time. pymalloc then finds whole arenas free and unmaps them, and
 * the capture thread's next rows map fresh ones, each page faulted and zeroed again (perf of
 * `guardian agent` at hey 10k: allocate_from_new_pool -> page faults, ~12 % of the capture
 * thread). Up to arenas_max freed arenas are kept mapped (their pages warm) and handed out again
 * before a new one is mapped. Every arena is one block of the size pymalloc asks (the same each
 * time); the original allocator maps and unmaps what the cache does not hold. */
#define ARENAS_MAX_LIMIT 64
static PyObjectArenaAllocator arena_base; /* the allocator before ours (mmap/munmap) */
static void *arena_kept[ARENAS_MAX_LIMIT];
static size_t arena_size[ARENAS_MAX_LIMIT];
static int arenas_kept, arenas_max, arenas_installed;
static unsigned long long arenas_reused, arenas_mapped;

static void *arena_alloc(void *ctx, size_t size)
{
    for (int k = arenas_kept - 1; k >= 0; k--)
        if (arena_size[k] == size) {
            void *p = arena_kept[k];
            arenas_kept--;
            arena_kept[k] = arena_kept[arenas_kept];
            arena_size[k] = arena_size[arenas_kept];
            arenas_reused++;
            return p;
        }
    arenas_mapped++;
    return arena_base.alloc(arena_base.ctx, size);
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    if (ptr != NULL && arenas_kept < arenas_max) {
        arena_kept[arenas_kept] = ptr;
        arena_size[arenas_kept++] = size;
        return;
    }
    arena_base.free(arena_base.ctx, ptr, size);
}

static PyObject *keep_arenas(PyObject *self, PyObject *args)
{
    int n;
    if (!PyArg_ParseTuple(args, "i", &n))
        return NULL;
    if (n < 0 || n > ARENAS_MAX_LIMIT) {
        PyErr_Format(PyExc_ValueError, "keep_arenas: 0 to %d arenas", ARENAS_MAX_LIMIT);
        return NULL;
    }
    if (!arenas_installed) {
        PyObjectArenaAllocator ours = {NULL, arena_alloc, arena_free};
        PyObject_GetArenaAllocator(&arena_base);
        PyObject_SetArenaAllocator(&ours);
        arenas_installed = 1;
    }
    arenas_max = n;
    while (arenas_kept > arenas_max) { /* fewer kept now: the rest unmapped */
        arenas_kept--;
        arena_base.free(arena_base.ctx, arena_kept[arenas_kept], arena_size[arenas_kept]);
    }
    Py_RETURN_NONE;
}

static PyObject *arenas(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{s:i,s:i,s:K,s:K}", "kept", arenas_kept, "max", arenas_max, "reused", arenas_reused,
                         "mapped", arenas_mapped);
}

static PyMethodDef methods[] = {
    {"clears", clears, METH_NOARGS, "clears() -> int: times rows() found the facts table full and cleared it."},
    {"bind", bind, METH_VARARGS, "bind(Span, Row, one_row) -> bool: see capture.rows."},
    {"rows", rows, METH_VARARGS, "rows(spans, facts, facts_max) -> list of Rows: capture.rows.to_rows in C."},
    {"keep_arenas", keep_arenas, METH_VARARGS, "keep_arenas(n): up to n freed pymalloc arenas kept mapped for reuse."},
    {"arenas", arenas, METH_NOARGS, "arenas() -> {kept, max, reused, mapped}: the arena cache's counts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._rows", "capture.rows.to_rows in C.", -1, methods};

PyMODINIT_FUNC PyInit__rows(void)
{
    init_escapes();
    (void)put_resource; /* json_write.h's, for the --json writers */
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {{&K_caddr, "client.address"}, {&K_cport, "client.port"}, {&K_saddr, "server.address"},
                 {&K_sport, "server.port"}, {&K_transport, "network.transport"}, {&K_goroutine, "go.goroutine.id"},
                 {&K_thread, "thread.id"}, {&K_traceparent, "http.request.header.traceparent"}, {&S_tcp, "tcp"},
                 {&S_g, "g"}, {&S_t, "t"}, {&S_empty, ""}, {&S_CLIENT, "CLIENT"}, {&S_PRODUCER, "PRODUCER"},
                 {&K_server_address, "server.address"}, {&K_server_port, "server.port"},
                 {&PEER_KEYS[0], "db.system"}, {&PEER_KEYS[1], "db.system.name"},
                 {&PEER_KEYS[2], "messaging.system"}, {&PEER_KEYS[3], "rpc.service"}};
    for (size_t k = 0; k < sizeof(names) / sizeof(*names); k++)
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].text)) == NULL)
            return NULL;
    return PyModule_Create(&module);
}
