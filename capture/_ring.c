/* capture._ring: the per-record loops of capture/ringbuf.py in C (reading committed
 * records out of a mapped BPF ring buffer, and merging records by their timestamp).
 *
 * capture/ringbuf.py holds the same loops in Python and stays the specification; it uses
 * these when the extension is built (setup.py, by `make setup`) and its own otherwise.
 * Nothing here parses a record beyond its ring header and its leading u64 timestamp. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BUSY_BIT (1u << 31)
#define DISCARD_BIT (1u << 30)
#define HEADER 8

static uint64_t ts_of(PyObject *rec)
{
    uint64_t ts = 0;
    if (PyBytes_GET_SIZE(rec) >= 8)
        memcpy(&ts, PyBytes_AS_STRING(rec), 8);
    return ts;
}

/* `n` bytes of the data area (`size` bytes, a power of two) from offset `off`, across its end. */
static void copy_wrapped(uint8_t *dst, const uint8_t *data, uint64_t off, uint64_t n, uint64_t size)
{
    uint64_t first = size - off < n ? size - off : n;
    memcpy(dst, data + off, first);
    if (n > first)
        memcpy(dst + first, data, n - first);
}

/* read(prod, cons, data_at, mask, limit, until_ts) -> (records, backlog)
 * prod: the read-only mapping (producer page + the data area once: a record that wraps around
 * its end is copied in two pieces), cons: the consumer page.
 * Hands out committed records in ring order, at most `limit`, stopping at a busy record or
 * one stamped after until_ts; moves the consumer position past what it read (and past
 * discarded records). backlog: bytes waiting when it started. */
static PyObject *ring_read(PyObject *self, PyObject *args)
{
    Py_buffer prod, cons;
    Py_ssize_t data_at, limit;
    unsigned long long mask, until_ts;
    if (!PyArg_ParseTuple(args, "y*w*nKnK", &prod, &cons, &data_at, &mask, &limit, &until_ts))
        return NULL;
    PyObject *out = NULL;
    if (cons.len < 8 || prod.len < data_at + (Py_ssize_t)(mask + 1)) {
        PyErr_SetString(PyExc_ValueError, "mappings smaller than the ring");
        goto done;
    }
    const uint8_t *p = prod.buf;
    uint64_t *cons_pos = cons.buf;
    uint64_t cpos = __atomic_load_n(cons_pos, __ATOMIC_RELAXED);
    uint64_t ppos = __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
    uint64_t backlog = ppos - cpos;
    out = PyList_New(0);
    if (out == NULL)
        goto done;
    Py_ssize_t n = 0;
    const uint8_t *data = p + data_at;
    while (cpos < ppos && n < limit) {
        /* headers are 8-byte aligned in a data area that is a multiple of 8: never split */
        const uint8_t *at = data + (cpos & mask);
        uint64_t body = (cpos + HEADER) & mask;
        uint32_t len = __atomic_load_n((const uint32_t *)at, __ATOMIC_ACQUIRE);
        if (len & BUSY_BIT)
            break; /* reserved, not yet submitted: records after it wait too */
        uint32_t size = len & ~(BUSY_BIT | DISCARD_BIT);
        if (size > mask + 1) { /* never from a sane kernel: do not read past the mapping */
            PyErr_SetString(PyExc_ValueError, "ring record larger than the ring");
            Py_CLEAR(out);
            break;
        }
        if (!(len & DISCARD_BIT)) {
            uint64_t ts = 0;
            if (size >= 8)
                copy_wrapped((uint8_t *)&ts, data, body, 8, mask + 1);
            if (ts > until_ts)
                break; /* too recent: an older record may still come through the spill ring */
            PyObject *rec = PyBytes_FromStringAndSize(NULL, size);
            if (rec != NULL)
                copy_wrapped((uint8_t *)PyBytes_AS_STRING(rec), data, body, size, mask + 1);
            if (rec == NULL || PyList_Append(out, rec) < 0) {
                Py_XDECREF(rec);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(rec);
            n++;
        }
        cpos += (size + HEADER + 7) & ~7ull;
        if ((n & 255) == 0) /* give the producer its space back during long batches */
            __atomic_store_n(cons_pos, cpos, __ATOMIC_RELEASE);
        if (cpos >= ppos)
            ppos = __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
    }
    __atomic_store_n(cons_pos, cpos, __ATOMIC_RELEASE);
    if (out != NULL) {
        PyObject *res = Py_BuildValue("(NK)", out, (unsigned long long)backlog);
        out = res;
    }
done:
    PyBuffer_Release(&prod);
    PyBuffer_Release(&cons);
    return out;
}

/* merge(main, held, start, horizon, rest) -> (records, next_start)
 * main: records in ring order; held[start:]: records sorted by timestamp. Each held record
 * goes just before the first main record stamped at or after it; when `rest` is true, held
 * records stamped up to `horizon` that are left after main follow. next_start: the first
 * held record not handed out. */
static PyObject *ring_merge(PyObject *self, PyObject *args)
{
    PyObject *main, *held;
    Py_ssize_t start;
    unsigned long long horizon;
    int rest;
    if (!PyArg_ParseTuple(args, "O!O!nKp", &PyList_Type, &main, &PyList_Type, &held, &start,
                          &horizon, &rest))
        return NULL;
    Py_ssize_t nm = PyList_GET_SIZE(main), nh = PyList_GET_SIZE(held);
    if (start < 0)
        start = 0;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t h = start;
    for (Py_ssize_t i = 0; i < nm; i++) {
        PyObject *m = PyList_GET_ITEM(main, i);
        if (!PyBytes_Check(m)) {
            PyErr_SetString(PyExc_TypeError, "records must be bytes");
            goto fail;
        }
        uint64_t ts = ts_of(m);
        while (h < nh) {
            PyObject *x = PyList_GET_ITEM(held, h);
            if (!PyBytes_Check(x)) {
                PyErr_SetString(PyExc_TypeError, "records must be bytes");
                goto fail;
            }
            if (ts_of(x) > ts)
                break;
            if (PyList_Append(out, x) < 0)
                goto fail;
            h++;
        }
        if (PyList_Append(out, m) < 0)
            goto fail;
    }
    while (rest && h < nh) {
        PyObject *x = PyList_GET_ITEM(held, h);
        if (!PyBytes_Check(x)) {
            PyErr_SetString(PyExc_TypeError, "records must be bytes");
            goto fail;
        }
        if (ts_of(x) > horizon)
            break;
        if (PyList_Append(out, x) < 0)
            goto fail;
        h++;
    }
    return Py_BuildValue("(Nn)", out, h);
fail:
    Py_DECREF(out);
    return NULL;
}

struct keyed {
    uint64_t ts;
    Py_ssize_t idx;
};

static int by_ts(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* stable: ring order among equals */
}

/* sort(records) -> a new list of the same records by timestamp (ring order among equals) */
static PyObject *ring_sort(PyObject *self, PyObject *arg)
{
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "expected a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    struct keyed *keys = PyMem_Malloc(sizeof(*keys) * (n ? n : 1));
    if (keys == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyList_GET_ITEM(arg, i);
        if (!PyBytes_Check(x)) {
            PyMem_Free(keys);
            PyErr_SetString(PyExc_TypeError, "records must be bytes");
            return NULL;
        }
        keys[i].ts = ts_of(x);
        keys[i].idx = i;
    }
    qsort(keys, n, sizeof(*keys), by_ts);
    PyObject *out = PyList_New(n);
    if (out != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *x = PyList_GET_ITEM(arg, keys[i].idx);
            Py_INCREF(x);
            PyList_SET_ITEM(out, i, x);
        }
    }
    PyMem_Free(keys);
    return out;
}

static PyMethodDef methods[] = {
    {"read", ring_read, METH_VARARGS, "Committed records of a mapped ring buffer, in ring order."},
    {"merge", ring_merge, METH_VARARGS, "Ring-ordered records merged with timestamp-sorted ones."},
    {"sort", ring_sort, METH_O, "Records sorted by their leading u64 timestamp."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._ring",
                                    "Ring-buffer record loops of capture/ringbuf.py, in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__ring(void) { return PyModule_Create(&module); }
