/* capture._http1: scan() of capture/protocols/http1_head.py in C (one HTTP/1 message head
 * into the facts the parser keeps: where it ends, its first line, whether the hot path takes
 * that line whole, the body's framing headers and the request headers kept as attributes).
 *
 * capture/protocols/http1_head.py is the specification; capture/protocols/http1.py uses this
 * when setup.py (`make setup`) built it and the Python otherwise. Nothing here keeps state
 * between calls or decides framing or pairing. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NO_LENGTH (-1)
#define BAD_LENGTH (-3)

static const char *const METHODS[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                                      "TRACE", "CONNECT"};

/* Header names searched for, lower-case with their leading CRLF and trailing colon. */
enum { TE, CL, HOST, AGENT, PARENT, NAMES };
static const char *const NAME[NAMES] = {"\r\ntransfer-encoding:", "\r\ncontent-length:", "\r\nhost:",
                                        "\r\nuser-agent:", "\r\ntraceparent:"};
static Py_ssize_t NAME_LEN[NAMES];

static inline unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Python's bytes.isspace() set: what bytes.strip() removes. */
static inline int space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

static inline int word(unsigned char c) /* a bytes pattern's \w */
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static Py_ssize_t find_crlf(const unsigned char *s, Py_ssize_t from, Py_ssize_t n)
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
static int request_ok(const unsigned char *line, Py_ssize_t n)
{
    for (size_t k = 0; k < sizeof(METHODS) / sizeof(*METHODS); k++) {
        Py_ssize_t m = (Py_ssize_t)strlen(METHODS[k]);
        if (n < m + 2 || memcmp(line, METHODS[k], m) != 0 || line[m] != ' ')
            continue;
        unsigned char c = line[m + 1];
        if (!(c == '/' || c == '*' || c == 'h' || word(c)))
            return 0;
        return n >= m + 2 + 9 && memcmp(line + n - 9, " HTTP/1.", 8) == 0 &&
               (line[n - 1] == '0' || line[n - 1] == '1');
    }
    return 0;
}

static int digits(const unsigned char *s, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* A kept header's value, stripped, as latin-1 text; None when absent. */
static PyObject *text(const unsigned char *s, Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0)
        Py_RETURN_NONE;
    while (a < b && space(s[a]))
        a++;
    while (b > a && space(s[b - 1]))
        b--;
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
    if (pos < 0 || pos > len || end > len || (end >= 0 && end < pos)) {
        PyErr_SetString(PyExc_ValueError, "head bounds outside the data");
        goto done;
    }
    if (end < 0) {
        const unsigned char *e = memmem(data + pos, len - pos, "\r\n\r\n", 4);
        if (e == NULL) {
            out = Py_NewRef(Py_None);
            goto done;
        }
        end = e - data;
    }
    const unsigned char *h = data + pos;
    Py_ssize_t n = end - pos;
    Py_ssize_t nl = find_crlf(h, 0, n);
    Py_ssize_t first_len = nl >= 0 ? nl : n;
    int req = request_ok(h, first_len);
    long status = -1;
    Py_ssize_t code_len = first_len - 9 < 3 ? first_len - 9 : 3;
    if (first_len >= 10 && memcmp(h, "HTTP/1.", 7) == 0 && h[8] == ' ' && digits(h + 9, code_len) &&
        (first_len <= 12 || h[12] == ' ')) {
        status = 0;
        for (Py_ssize_t i = 0; i < code_len; i++)
            status = status * 10 + (h[9 + i] - '0');
    }
    /* first occurrence of each name, from one walk over the head's CRLFs */
    Py_ssize_t at[NAMES], found = 0;
    for (int k = 0; k < NAMES; k++)
        at[k] = -1;
    for (Py_ssize_t i = nl; i >= 0 && found < NAMES; i = find_crlf(h, i + 1, n)) {
        unsigned char c = i + 2 < n ? lower(h[i + 2]) : 0;
        if (c != 't' && c != 'c' && c != 'h' && c != 'u')
            continue;
        for (int k = 0; k < NAMES; k++) {
            if (at[k] >= 0 || NAME[k][2] != c || i + NAME_LEN[k] > n)
                continue;
            Py_ssize_t j = 3;
            while (j < NAME_LEN[k] && lower(h[i + j]) == (unsigned char)NAME[k][j])
                j++;
            if (j == NAME_LEN[k]) {
                at[k] = i + NAME_LEN[k];
                found++;
            }
        }
    }
    Py_ssize_t stop[NAMES];
    for (int k = 0; k < NAMES; k++) {
        Py_ssize_t j = at[k] >= 0 ? find_crlf(h, at[k], n) : -1;
        stop[k] = j >= 0 ? j : n;
    }
    int chunked = 0;
    if (at[TE] >= 0) {
        for (Py_ssize_t i = at[TE]; i + 7 <= stop[TE] && !chunked; i++) {
            int j = 0;
            while (j < 7 && lower(h[i + j]) == "chunked"[j])
                j++;
            chunked = j == 7;
        }
    }
    long long length = NO_LENGTH;
    if (at[CL] >= 0) {
        Py_ssize_t a = at[CL], b = stop[CL];
        while (a < b && space(h[a]))
            a++;
        while (b > a && space(h[b - 1]))
            b--;
        length = BAD_LENGTH;
        if (digits(h + a, b - a) && b - a < 19) {
            length = 0;
            for (Py_ssize_t i = a; i < b; i++)
                length = length * 10 + (h[i] - '0');
        }
    }
    PyObject *items[9] = {
        PyLong_FromSsize_t(end),
        PyBytes_FromStringAndSize((const char *)h, first_len),
        Py_NewRef(req ? Py_True : Py_False),
        PyLong_FromLong(status),
        Py_NewRef(chunked ? Py_True : Py_False),
        PyLong_FromLongLong(length),
        text(h, at[HOST], stop[HOST]),
        text(h, at[AGENT], stop[AGENT]),
        text(h, at[PARENT], stop[PARENT]),
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

PyMODINIT_FUNC PyInit__http1(void)
{
    for (int k = 0; k < NAMES; k++)
        NAME_LEN[k] = (Py_ssize_t)strlen(NAME[k]);
    return PyModule_Create(&module);
}
