/* PostgreSQL simple queries in capture/_fastpath.c (included there, after the table and the FIFO
 * taker), as capture/protocols/postgres.py's PostgresParser and record_to_span make their spans. */
#ifndef GUARDIAN_FASTPATH_POSTGRES_H
#define GUARDIAN_FASTPATH_POSTGRES_H

/* ---- PostgreSQL simple queries: Q ... Z (capture/protocols/postgres.py is the specification) ----
 * A held connection's requests are Query messages only (any other frontend message goes to Python,
 * with everything extended-protocol); its replies are the backend messages of those queries. */
#define PG_MAX_FRAME (1 << 20)   /* frames.py MAX_BUFFER: a larger frame is kept cut, by Python */
#define PG_MAX_QUERY 4096        /* postgres.py MAX_QUERY */
#define PG_MAX_PENDING 4096      /* postgres.py MAX_PENDING */
static const char PG_BACKEND[] = "RSKZTDCEIN123ntsAGHWdcvV";

/* The typed frame at b[at] whole in b[:n]: its end, or -1. */
static Py_ssize_t pg_frame(const unsigned char *b, Py_ssize_t n, Py_ssize_t at)
{
    if (n - at < 5)
        return -1;
    uint32_t len = (uint32_t)b[at + 1] << 24 | (uint32_t)b[at + 2] << 16 | (uint32_t)b[at + 3] << 8 | b[at + 4];
    if (len < 4 || len + 1 > PG_MAX_FRAME || (Py_ssize_t)len + 1 > n - at)
        return -1;
    return at + len + 1;
}

/* A C string of body b[a:e] (to its NUL or e), decoded as postgres._cstr does. */
static PyObject *pg_cstr(const unsigned char *b, Py_ssize_t a, Py_ssize_t e)
{
    const unsigned char *z = memchr(b + a, 0, e - a);
    return PyUnicode_DecodeUTF8((const char *)b + a, (z ? z - b : e) - a, "replace");
}

static int pg_requests(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                       PyObject *tid, PyObject *spans)
{
    /* a Query written while one of an earlier chunk waits: that one's answer was missed (postgres.py
     * Rule 4), Python's case */
    if (c->qlen)
        return 0;
    for (Py_ssize_t at = 0; at < n;) {
        Py_ssize_t next = pg_frame(b, n, at);
        if (next < 0 || b[at] != 'Q' || c->qlen >= PG_MAX_PENDING)
            return 0;
        struct rcmd r = {0};
        r.start = ts;
        PyObject *q = pg_cstr(b, at + 5, next);
        if (q == NULL) {
            PyErr_Clear();
            return 0;
        }
        r.name = PyUnicode_GET_LENGTH(q) > PG_MAX_QUERY ? PyUnicode_Substring(q, 0, PG_MAX_QUERY) : Py_NewRef(q);
        Py_DECREF(q);
        if (r.name == NULL || queue_push(c, &r) < 0) {
            rcmd_clear(&r);
            PyErr_Clear();
            return 0;
        }
        at = next;
    }
    return 1;
}

/* The span of query r (its text in r->name; r->attrs: its CommandComplete tag, r->channel: its
 * error's fields C and M as a tuple) that ReadyForQuery ended at `end` (PostgresParser._emit). */
static PyObject *pg_span(Table *t, struct conn *c, struct rcmd *r, long long end, PyObject *tid)
{
    PyObject *attrs = PyDict_New(), *summary = NULL, *op = NULL, *name = NULL, *msg = NULL, *span = NULL;
    PyObject *status = S_UNSET, *query = r->name, *tag = r->attrs;
    if (attrs == NULL || PyDict_SetItem(attrs, K_db_system, S_postgresql) < 0 ||
        (c->database && PyDict_SetItem(attrs, K_db_namespace, c->database) < 0) ||
        (PyUnicode_GET_LENGTH(query) && PyDict_SetItem(attrs, K_db_query, query) < 0))
        goto done;
    if ((summary = sql_summary_of(t, query)) == NULL)
        goto done;
    op = Py_NewRef(PyTuple_GET_ITEM(summary, 0));
    PyObject *table = PyTuple_GET_ITEM(summary, 1);
    if (tag != NULL && PyUnicode_GET_LENGTH(tag)) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(tag), sp = PyUnicode_FindChar(tag, ' ', 0, len, 1);
        Py_ssize_t last = PyUnicode_FindChar(tag, ' ', 0, len, -1);
        if (sp != 0) { /* the tag's first word, when it has one, names the operation */
            Py_SETREF(op, PyUnicode_Substring(tag, 0, sp < 0 ? len : sp));
            if (op == NULL)
                goto done;
        }
        Py_ssize_t from = last < 0 ? 0 : last + 1;
        int digits = len - from >= 1 && len - from <= 19; /* the last word: ASCII digits only */
        for (Py_ssize_t k = from; digits && k < len; k++) {
            Py_UCS4 ch = PyUnicode_READ_CHAR(tag, k);
            digits = ch >= '0' && ch <= '9';
        }
        if (digits) {
            PyObject *word = PyUnicode_Substring(tag, from, len);
            PyObject *rows = word ? PyLong_FromUnicodeObject(word, 10) : NULL;
            Py_XDECREF(word);
            if (rows == NULL || PyDict_SetItem(attrs, K_rows, rows) < 0) {
                Py_XDECREF(rows);
                goto done;
            }
            Py_DECREF(rows);
        }
    } else if (r->get) { /* DataRows counted */
        PyObject *rows = PyLong_FromLong(r->get);
        if (rows == NULL || PyDict_SetItem(attrs, K_rows, rows) < 0) {
            Py_XDECREF(rows);
            goto done;
        }
        Py_DECREF(rows);
    }
    if ((PyUnicode_GET_LENGTH(op) && PyDict_SetItem(attrs, K_db_operation, op) < 0) ||
        (PyUnicode_GET_LENGTH(table) && PyDict_SetItem(attrs, K_db_collection, table) < 0))
        goto done;
    msg = Py_NewRef(S_empty);
    if (r->channel != NULL) { /* (code, message) of its ErrorResponse */
        PyObject *code = PyTuple_GET_ITEM(r->channel, 0);
        status = S_ERROR;
        Py_SETREF(msg, PyUnicode_Substring(PyTuple_GET_ITEM(r->channel, 1), 0, 512));
        if (msg == NULL || PyDict_SetItem(attrs, K_db_status, code) < 0 ||
            PyDict_SetItem(attrs, K_error, PyUnicode_GET_LENGTH(code) ? code : S_ERROR) < 0)
            goto done;
    }
    if (PyUnicode_GET_LENGTH(op) && PyUnicode_GET_LENGTH(table))
        name = PyUnicode_FromFormat("%U %U", op, table);
    else
        name = Py_NewRef(PyUnicode_GET_LENGTH(op) ? op : S_postgresql);
    if (name == NULL)
        goto done;
    span = sql_span(t, c, query, name, r->start, end, status, attrs, &msg, tid);
done:
    rcmd_clear(r);
    Py_XDECREF(attrs);
    Py_XDECREF(summary);
    Py_XDECREF(op);
    Py_XDECREF(name);
    Py_XDECREF(msg);
    return span;
}

/* The fields C and M of an ErrorResponse body b[a:e] (postgres._error_fields: the last of each). */
static PyObject *pg_error(const unsigned char *b, Py_ssize_t a, Py_ssize_t e)
{
    PyObject *code = Py_NewRef(S_empty), *msg = Py_NewRef(S_empty);
    while (a < e && b[a] != 0) {
        unsigned char f = b[a];
        const unsigned char *z = memchr(b + a + 1, 0, e - a - 1);
        Py_ssize_t end = z ? z - b : e;
        if (f == 'C' || f == 'M') {
            PyObject *v = PyUnicode_DecodeUTF8((const char *)b + a + 1, end - a - 1, "replace");
            if (v == NULL)
                goto fail;
            Py_SETREF(*(f == 'C' ? &code : &msg), v);
        }
        a = end + 1;
    }
    PyObject *out = PyTuple_Pack(2, code, msg);
    Py_DECREF(code);
    Py_DECREF(msg);
    return out;
fail:
    Py_DECREF(code);
    Py_DECREF(msg);
    return NULL;
}

static int pg_replies(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                      PyObject *tid, PyObject *spans)
{
    for (Py_ssize_t at = 0; at < n;) {
        Py_ssize_t next = pg_frame(b, n, at);
        if (next < 0 || b[at] == 0 || strchr(PG_BACKEND, b[at]) == NULL || c->qlen == 0)
            return 0;
        struct rcmd *head = &c->q[c->qhead];
        PyObject *v = NULL;
        switch (b[at]) {
        case 'Z': {
            int rc = append_span(spans, pg_span(t, c, queue_pop(c), ts, tid));
            if (rc <= 0)
                return rc;
            break;
        }
        case 'E':
            if ((v = pg_error(b, at + 5, next)) == NULL) {
                PyErr_Clear();
                return 0;
            }
            Py_XSETREF(head->channel, v);
            break;
        case 'D':
            head->get++;
            break;
        case 'C':
            if ((v = pg_cstr(b, at + 5, next)) == NULL) {
                PyErr_Clear();
                return 0;
            }
            Py_XSETREF(head->attrs, v);
            break;
        default: /* nothing a query waits for */
            break;
        }
        at = next;
    }
    return 1;
}

static int take_postgres(Table *t, struct conn *c, PyObject *raw, const struct guardian_event *first, PyObject *out)
{
    return take_fifo(t, c, raw, first, out, pg_requests, pg_replies);
}
#endif
