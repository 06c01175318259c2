/* capture._http1: scan() of capture/protocols/http1_head.py in C (one HTTP/1 message head
 * into the facts the parser keeps: where it ends, its first line, whether the hot path takes
 * that line whole, the body's framing headers and the request headers kept as attributes).
 *
 * capture/protocols/http1_head.py is the specification; capture/protocols/http1.py uses this
 * when setup.py (`make setup`) built it and the Python otherwise. The scan itself is
 * capture/http1_scan.h (shared with capture/_fastpath.c); this file turns it into Python values.
 * Nothing here keeps state between calls or decides framing or pairing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "http1_scan.h"

/* A kept header's value, stripped, as latin-1 text; None when absent. */
static PyObject *text(const unsigned char *s, Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0)
        Py_RETURN_NONE;
    head_strip(s, &a, &b);
    return PyUnicode_DecodeLatin1((const char *)s + a, b - a, NULL);
}

static PyObject *scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos = 0, end = -1;
    if (!PyArg_ParseTuple(args, "y*|nn", &view, &pos, &end))
        return NULL;
    PyObject *out = NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t len = view.len;
    struct head hd;
    if (pos < 0 || pos > len || end > len || (end >= 0 && end < pos)) {
        PyErr_SetString(PyExc_ValueError, "head bounds outside the data");
        goto done;
    }
    if (!head_scan(data, len, pos, end, &hd)) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    const unsigned char *h = data + pos;
    PyObject *items[9] = {
        PyLong_FromSsize_t(hd.end),
        PyBytes_FromStringAndSize((const char *)h, hd.first_len),
        Py_NewRef(hd.request_ok ? Py_True : Py_False),
        PyLong_FromLong(hd.status),
        Py_NewRef(hd.chunked ? Py_True : Py_False),
        PyLong_FromLongLong(hd.length),
        text(h, hd.at[HEAD_HOST], hd.stop[HEAD_HOST]),
        text(h, hd.at[HEAD_AGENT], hd.stop[HEAD_AGENT]),
        text(h, hd.at[HEAD_PARENT], hd.stop[HEAD_PARENT]),
    };
    out = PyTuple_New(9);
    for (int k = 0; k < 9; k++) {
        if (items[k] == NULL || out == NULL) {
            for (int m = k; m < 9; m++)
                Py_XDECREF(items[m]);
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, k, items[k]);
    }
done:
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "scan(data, pos=0, end=-1): see capture.protocols.http1_head.scan."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._http1",
                                    "HTTP/1 head scan of capture/protocols/http1_head.py, in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__http1(void) { return PyModule_Create(&module); }
