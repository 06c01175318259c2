/* MySQL / MariaDB text queries in capture/_fastpath.c (included there, after the table and the FIFO
 * taker), as capture/protocols/mysql.py's MysqlParser and record_to_span make their spans. */
#ifndef GUARDIAN_FASTPATH_MYSQL_H
#define GUARDIAN_FASTPATH_MYSQL_H

/* ---- MySQL: COM_QUERY and COM_PING -> OK, ERR or a result set (mysql.py is the specification) ----
 * A held connection's requests are those two commands (any other, prepared statements, the
 * handshake, LOCAL INFILE go to Python); its replies are read with mysql.py's server states. */
#define MY_MAX_FRAME (1 << 20) /* frames.py MAX_BUFFER: a larger packet is kept cut, by Python */
#define MY_MAX_QUERY 4096      /* mysql.py MAX_QUERY (bytes) */
#define MY_MAX_PENDING 1024    /* mysql.py MAX_PENDING */
#define MY_MORE_RESULTS 0x0008 /* SERVER_MORE_RESULTS_EXISTS */
enum { MY_IDLE, MY_MORE, MY_COLUMNS, MY_ROWS_START, MY_ROWS }; /* mysql.py's states (DEFS, FIELDS: Python's) */

/* The packet at b[at] whole in b[:n]: its end, or -1. */
static Py_ssize_t my_packet(const unsigned char *b, Py_ssize_t n, Py_ssize_t at)
{
    if (n - at < 4)
        return -1;
    Py_ssize_t len = 4 + (b[at] | b[at + 1] << 8 | b[at + 2] << 16);
    if (len > MY_MAX_FRAME || len > n - at)
        return -1;
    return at + len;
}

/* mysql._lenenc: the integer at p[*pos], *pos moved past it (past the end for a cut one). */
static uint64_t my_lenenc(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos)
{
    if (*pos >= n)
        return 0;
    unsigned ch = p[*pos];
    if (ch < 0xFB) {
        (*pos)++;
        return ch;
    }
    int width = ch == 0xFC ? 2 : ch == 0xFD ? 3 : ch == 0xFE ? 8 : 0;
    uint64_t v = 0;
    for (int k = 0; k < width && *pos + 1 + k < n; k++)
        v |= (uint64_t)p[*pos + 1 + k] << (8 * k);
    *pos += 1 + width;
    return v;
}

static unsigned my_u16(const unsigned char *p, Py_ssize_t n, Py_ssize_t pos)
{
    return (pos < n ? p[pos] : 0) | (pos + 1 < n ? p[pos + 1] << 8 : 0);
}

/* mysql._error of an ERR payload p[:n]: (code, sqlstate, message) */
static PyObject *my_error(const unsigned char *p, Py_ssize_t n)
{
    unsigned code = my_u16(p, n, 1);
    if (n >= 4 && p[3] == '#') {
        Py_ssize_t end = n < 9 ? n : 9;
        return Py_BuildValue("(INN)", code, PyUnicode_DecodeLatin1((const char *)p + 4, end - 4, NULL),
                             PyUnicode_DecodeUTF8((const char *)p + end, n - end, "replace"));
    }
    Py_ssize_t from = n < 3 ? n : 3;
    return Py_BuildValue("(IsN)", code, "", PyUnicode_DecodeUTF8((const char *)p + from, n - from, "replace"));
}

/* A command packet (sequence `seq`, payload p[:n]) that began at ts: COM_QUERY (its text, cut in
 * bytes) or COM_PING waits for its reply; 0 for any other (Python's). */
static int my_command(struct conn *c, unsigned seq, const unsigned char *p, Py_ssize_t n, long long ts)
{
    if (seq != 0 || n < 1 || (p[0] != 0x03 && p[0] != 0x0e) || c->qlen >= MY_MAX_PENDING)
        return 0;
    struct rcmd r = {0};
    r.start = ts;
    r.scrub = p[0]; /* the command */
    if (r.scrub == 0x03) {
        r.name = PyUnicode_DecodeUTF8((const char *)p + 1, n - 1 < MY_MAX_QUERY ? n - 1 : MY_MAX_QUERY, "replace");
        if (r.name == NULL) {
            PyErr_Clear();
            return 0;
        }
    }
    if (queue_push(c, &r) < 0) {
        rcmd_clear(&r);
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static int my_requests(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                       PyObject *tid, PyObject *spans)
{
    /* a command written while one of an earlier chunk waits: at the server's end that one's answer
     * was missed (mysql.py Rule 5), at the client's a pipelining connector: Python's case */
    if (c->qlen)
        return 0;
    Py_ssize_t at = 0;
    if (c->my_hdr_len) { /* the payload of the header the last request chunk was */
        Py_ssize_t need = c->my_hdr[0] | c->my_hdr[1] << 8 | c->my_hdr[2] << 16;
        c->my_hdr_len = 0;
        if (n < need || my_command(c, c->my_hdr[3], b, need, c->my_hdr_ts) == 0)
            return 0;
        at = need;
    }
    while (at < n) {
        if (n - at == 4) { /* a header read alone (MariaDB reads a packet's header, then its payload) */
            Py_ssize_t len = b[at] | b[at + 1] << 8 | b[at + 2] << 16;
            if (b[at + 3] != 0 || len < 1 || 4 + len > MY_MAX_FRAME)
                return 0;
            memcpy(c->my_hdr, b + at, 4);
            c->my_hdr_len = 4;
            c->my_hdr_ts = ts;
            return 1;
        }
        Py_ssize_t next = my_packet(b, n, at);
        if (next < 0 || my_command(c, b[at + 3], b + at + 4, next - at - 4, ts) == 0)
            return 0;
        at = next;
    }
    return 1;
}

/* The span of command r (r->name: its text or NULL; r->get: rows; r->attrs: the affected rows of
 * its last OK as an int, or NULL; r->channel: its error) that ended at `end` (MysqlParser._emit). */
static PyObject *my_span(Table *t, struct conn *c, struct rcmd *r, long long end, PyObject *tid)
{
    PyObject *attrs = PyDict_New(), *summary = NULL, *name = NULL, *msg = NULL, *span = NULL, *v = NULL;
    PyObject *status = S_UNSET, *query = r->name, *op = S_empty, *table = S_empty;
    PyObject *command = r->scrub == 0x03 ? S_QUERY : S_PING;
    if (attrs == NULL || PyDict_SetItem(attrs, K_db_system, c->system) < 0 ||
        (c->database && PyDict_SetItem(attrs, K_db_namespace, c->database) < 0))
        goto done;
    if (query != NULL && PyUnicode_GET_LENGTH(query)) {
        if ((summary = sql_summary_of(t, query)) == NULL)
            goto done;
        op = PyTuple_GET_ITEM(summary, 0);
        table = PyTuple_GET_ITEM(summary, 1);
        if (PyDict_SetItem(attrs, K_db_query, query) < 0)
            goto done;
    }
    if ((PyUnicode_GET_LENGTH(op) && PyDict_SetItem(attrs, K_db_operation, op) < 0) ||
        (PyUnicode_GET_LENGTH(table) && PyDict_SetItem(attrs, K_db_collection, table) < 0))
        goto done;
    if (r->get)
        v = PyLong_FromLong(r->get);
    else if (r->attrs != NULL && PyObject_IsTrue(r->attrs))
        v = Py_NewRef(r->attrs);
    if (PyErr_Occurred() || (v != NULL && PyDict_SetItem(attrs, K_rows, v) < 0) ||
        PyDict_SetItem(attrs, K_mysql_command, command) < 0)
        goto done;
    msg = Py_NewRef(S_empty);
    if (r->channel != NULL) { /* (code, sqlstate, message) */
        PyObject *code = PyObject_Str(PyTuple_GET_ITEM(r->channel, 0)), *state = PyTuple_GET_ITEM(r->channel, 1);
        status = S_ERROR;
        Py_SETREF(msg, PyUnicode_Substring(PyTuple_GET_ITEM(r->channel, 2), 0, 512));
        int bad = code == NULL || msg == NULL || PyDict_SetItem(attrs, K_db_status, code) < 0 ||
                  PyDict_SetItem(attrs, K_error, code) < 0 ||
                  (PyUnicode_GET_LENGTH(state) && PyDict_SetItem(attrs, K_sqlstate, state) < 0);
        Py_XDECREF(code);
        if (bad)
            goto done;
    }
    PyObject *label = PyUnicode_GET_LENGTH(op) ? op : command;
    name = PyUnicode_GET_LENGTH(table) ? PyUnicode_FromFormat("%U %U", label, table) : Py_NewRef(label);
    if (name == NULL)
        goto done;
    span = sql_span(t, c, query, name, r->start, end, status, attrs, &msg, tid);
done:
    rcmd_clear(r);
    Py_XDECREF(attrs);
    Py_XDECREF(summary);
    Py_XDECREF(name);
    Py_XDECREF(msg);
    Py_XDECREF(v);
    return span;
}

/* mysql._done: the oldest command's span, ended at ts */
static int my_done(Table *t, struct conn *c, long long ts, PyObject *tid, PyObject *spans)
{
    c->my_state = MY_IDLE;
    c->my_left = 0;
    return c->qlen ? append_span(spans, my_span(t, c, queue_pop(c), ts, tid)) : 1;
}

/* An ERR packet ends the command with its error (mysql._error); 0: hand the connection back. */
static int my_failed(Table *t, struct conn *c, struct rcmd *head, const unsigned char *p, Py_ssize_t len,
                     long long ts, PyObject *tid, PyObject *spans)
{
    PyObject *e = my_error(p, len);
    if (e == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_XSETREF(head->channel, e);
    return my_done(t, c, ts, tid, spans);
}

/* An EOF or OK ending rows (mysql._rows): more results follow, or the command is done. */
static int my_end_of_rows(Table *t, struct conn *c, const unsigned char *p, Py_ssize_t n, long long ts,
                          PyObject *tid, PyObject *spans)
{
    unsigned status;
    if (n == 5)
        status = my_u16(p, n, 3);
    else {
        Py_ssize_t pos = 1;
        my_lenenc(p, n, &pos);
        my_lenenc(p, n, &pos);
        status = my_u16(p, n, pos);
    }
    if (status & MY_MORE_RESULTS) {
        c->my_state = MY_MORE;
        return 1;
    }
    return my_done(t, c, ts, tid, spans);
}

static int my_replies(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                      PyObject *tid, PyObject *spans)
{
    for (Py_ssize_t at = 0; at < n;) {
        Py_ssize_t next = my_packet(b, n, at);
        if (next < 0)
            return 0;
        const unsigned char *p = b + at + 4;
        Py_ssize_t len = next - at - 4;
        unsigned seq = b[at + 3];
        at = next;
        if (len == 0)
            continue; /* mysql._server: an empty payload is nothing */
        /* a greeting, a reply without a command, or a first packet whose sequence is not 1 (Python
         * skips it) */
        if ((seq == 0 && p[0] == 0x0A) || c->qlen == 0 || (c->my_state == MY_IDLE && seq != 1))
            return 0;
        struct rcmd *head = &c->q[c->qhead];
        int rc = 1;
        switch (c->my_state) {
        case MY_IDLE:
        case MY_MORE: /* mysql._first */
            if (p[0] == 0xFF)
                rc = my_failed(t, c, head, p, len, ts, tid, spans);
            else if (p[0] == 0x00 || p[0] == 0xFE) { /* OK */
                Py_ssize_t pos = 1;
                uint64_t affected = my_lenenc(p, len, &pos);
                my_lenenc(p, len, &pos);
                PyObject *a = PyLong_FromUnsignedLongLong(affected);
                if (a == NULL) {
                    PyErr_Clear();
                    return 0;
                }
                Py_XSETREF(head->attrs, a);
                if (my_u16(p, len, pos) & MY_MORE_RESULTS)
                    c->my_state = MY_MORE;
                else
                    rc = my_done(t, c, ts, tid, spans);
            } else if (p[0] == 0xFB) /* LOCAL INFILE: the client sends a file */
                return 0;
            else { /* a result set: its column count, then that many definitions */
                Py_ssize_t pos = 0;
                c->my_left = my_lenenc(p, len, &pos);
                c->my_state = c->my_left ? MY_COLUMNS : MY_ROWS;
            }
            break;
        case MY_COLUMNS:
            if (--c->my_left == 0)
                c->my_state = MY_ROWS_START;
            break;
        case MY_ROWS_START:
            if (p[0] == 0xFE && len == 5) { /* EOF after the definitions (no CLIENT_DEPRECATE_EOF) */
                c->my_state = MY_ROWS;
                break;
            }
            /* fall through */
        default: /* MY_ROWS: mysql._rows */
            c->my_state = MY_ROWS;
            if (p[0] == 0xFF)
                rc = my_failed(t, c, head, p, len, ts, tid, spans);
            else if (p[0] == 0xFE && len < 0xFFFFFF)
                rc = my_end_of_rows(t, c, p, len, ts, tid, spans);
            else if (head->get < INT_MAX)
                head->get++;
            else
                return 0;
            break;
        }
        if (rc <= 0)
            return rc;
    }
    return 1;
}

static int take_mysql(Table *t, struct conn *c, PyObject *raw, const struct guardian_event *first, PyObject *out)
{
    return take_fifo(t, c, raw, first, out, my_requests, my_replies);
}
#endif
