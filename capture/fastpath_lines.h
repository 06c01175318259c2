/* `--json` lines written by capture/_fastpath.c without making Span objects (Table.as_lines): the
 * same bytes as Span.json_line() of the Span the table would make otherwise (capture/span.py is the
 * specification; capture/json_write.h writes the values). A line this cannot write the same way is
 * left to the Span path. Included by _fastpath.c once timed_span is defined; not a unit of its own. */
#ifndef GUARDIAN_FASTPATH_LINES_H
#define GUARDIAN_FASTPATH_LINES_H

/* The keys build_span adds to a request line's attributes, in its order. */
static PyObject **const ADDED[] = {&K_host, &K_agent, &K_parent, &K_status, &K_error, &K_saddr, &K_sport, &K_caddr,
                                   &K_cport, &K_transport, &K_tid, &K_tls, &K_epoch};

/* A request line's attributes as JSON without the closing brace (bytes), for a line written
 * without its dict (http_line); None when build_span's additions could not simply follow them (a
 * key it adds is there already) or the writer leaves a value to orjson. */
static PyObject *attrs_open(PyObject *attrs)
{
    for (size_t k = 0; k < sizeof(ADDED) / sizeof(*ADDED); k++) {
        int has = PyDict_Contains(attrs, *ADDED[k]);
        if (has != 0)
            return has < 0 ? NULL : Py_NewRef(Py_None);
    }
    struct buf b = {NULL, 0, 0};
    int rc = put_value(&b, attrs, 0);
    PyObject *open = rc < 0 ? NULL : rc == OTHER ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(b.p, b.n - 1);
    PyMem_Free(b.p);
    return open;
}

/* add_ends' attributes of c as JSON, written once per connection: OK, OTHER (a value left to
 * orjson), -1 on error. */
static int conn_ends(struct conn *c)
{
    if (c->ends != NULL || c->ends_other)
        return c->ends_other ? OTHER : OK;
    struct buf b = {NULL, 0, 0};
    PyObject *vals[] = {c->saddr, c->sport, c->caddr, c->cport, c->transport, NULL, c->tls_library, c->epoch};
    static const char *const keys[] = {",\"server.address\":", ",\"server.port\":", ",\"client.address\":",
                                       ",\"client.port\":", ",\"network.transport\":", NULL, ",\"tls.library\":",
                                       ",\"guardian.connection.epoch\":"};
    int rc = reserve(&b, 1);
    size_t tail = 0;
    for (size_t k = 0; rc == OK && k < sizeof(vals) / sizeof(*vals); k++) {
        if (keys[k] == NULL) { /* where thread.id goes */
            tail = b.n;
            continue;
        }
        if (vals[k] == NULL)
            continue;
        size_t n = strlen(keys[k]);
        if ((rc = reserve(&b, n)) == OK) {
            put(&b, keys[k], n);
            rc = put_value(&b, vals[k], 0);
        }
    }
    if (rc != OK) {
        PyMem_Free(b.p);
        c->ends_other = rc == OTHER;
        return rc;
    }
    c->ends = b.p;
    c->ends_len = b.n;
    c->ends_tail = tail;
    return OK;
}

/* Whether a str key is one of add_ends' (it would not be added again: the line is not written here). */
static int end_key(PyObject *k)
{
    static const char *const names[] = {"server.address", "server.port", "client.address", "client.port",
                                        "network.transport", "thread.id", "tls.library", "guardian.connection.epoch"};
    if (!PyUnicode_IS_COMPACT_ASCII(k))
        return 0;
    const char *s = (const char *)PyUnicode_DATA(k);
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    if (n < 9 || !(s[0] == 's' || s[0] == 'c' || s[0] == 'n' || s[0] == 't' || s[0] == 'g'))
        return 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
        if ((size_t)n == strlen(names[i]) && memcmp(s, names[i], n) == 0)
            return 1;
    return 0;
}

/* The span's `--json` line (Span.json_line()'s bytes) in t->line, its ids drawn last; with_ends:
 * attrs then add_ends' attributes (tid: thread.id), as add_ends would make them when attrs has none
 * of them. OK, OTHER (a value the writer leaves to orjson, or with_ends and attrs holds one of
 * them: nothing drawn), -1 on error. */
static int line_of(Table *t, struct conn *c, PyObject *name, long long start, long long end, PyObject *status,
                   PyObject *attrs, PyObject *msg, int with_ends, PyObject *tid)
{
    struct buf *b = &t->line;
    b->n = 0;
    if (!PyUnicode_CheckExact(msg) || !PyDict_CheckExact(attrs))
        return OTHER; /* to_dict() asks msg's truth */
    if (reserve(b, 160) < 0)
        return -1;
    PUT_LIT(b, "{\"trace_id\":\"");
    size_t ids = b->n;
    b->n += 32;
    PUT_LIT(b, "\",\"span_id\":\"");
    b->n += 16;
    PUT_LIT(b, "\",\"parent_span_id\":null,\"name\":");
    int rc = put_value(b, name, 0);
    if (rc == OK && (rc = reserve(b, 10)) == 0) {
        PUT_LIT(b, ",\"kind\":");
        rc = put_value(b, c->kind, 0);
    }
    if (rc == OK && (rc = reserve(b, 24)) == 0) {
        PUT_LIT(b, ",\"start_time_unix_nano\":");
        rc = put_i64(b, start);
    }
    if (rc == OK && (rc = reserve(b, 24)) == 0) {
        PUT_LIT(b, ",\"end_time_unix_nano\":");
        rc = put_i64(b, end > start ? end : start);
    }
    if (rc == OK && (rc = reserve(b, 16)) == 0) {
        PUT_LIT(b, ",\"status_code\":");
        rc = put_value(b, status, 0);
    }
    if (rc == OK && (rc = reserve(b, 16)) == 0) {
        PUT_LIT(b, ",\"attributes\":");
        if (!with_ends)
            rc = put_value(b, attrs, 0);
        else if ((rc = conn_ends(c)) == OK) {
            Py_ssize_t pos = 0;
            PyObject *k, *v;
            int first = 1;
            put(b, "{", 1);
            while (rc == OK && PyDict_Next(attrs, &pos, &k, &v)) {
                if (!PyUnicode_CheckExact(k) || end_key(k))
                    rc = OTHER;
                else if ((rc = reserve(b, 1)) == OK) {
                    if (!first)
                        put(b, ",", 1);
                    first = 0;
                    if ((rc = put_str(b, k)) == OK && (rc = reserve(b, 1)) == OK) {
                        put(b, ":", 1);
                        rc = put_value(b, v, 1);
                    }
                }
            }
            /* each of them with its comma before it: the first one's goes when attrs is empty */
            size_t mark = b->n;
            if (rc == OK && (rc = reserve(b, c->ends_len + 40)) == OK) {
                put(b, c->ends, c->ends_tail);
                if (tid != NULL) {
                    PUT_LIT(b, ",\"thread.id\":");
                    rc = put_value(b, tid, 1);
                }
            }
            if (rc == OK && (rc = reserve(b, c->ends_len + 2)) == OK) {
                put(b, c->ends + c->ends_tail, c->ends_len - c->ends_tail);
                if (first && b->n > mark) {
                    memmove(b->p + mark, b->p + mark + 1, b->n - mark - 1);
                    b->n--;
                }
                put(b, "}", 1);
            }
        }
    }
    if (rc == OK && (rc = reserve(b, 16)) == 0) {
        PUT_LIT(b, ",\"resource\":");
        rc = put_resource(b, c->resource);
    }
    if (rc == OK && PyUnicode_GET_LENGTH(msg) && (rc = reserve(b, 24)) == 0) {
        PUT_LIT(b, ",\"status_message\":");
        rc = put_value(b, msg, 0);
    }
    if (rc == OK && (rc = reserve(b, 2)) == 0)
        put(b, "}\n", 2);
    if (rc == OK && (hex_fill(t, 16, b->p + ids) < 0 || hex_fill(t, 8, b->p + ids + 32 + 13) < 0))
        return -1;
    return rc;
}

/* The span's `--json` line (Span.json_line()'s bytes) written here; a value this writer leaves to
 * orjson makes the Span (its own ids drawn) and asks its json_line(). */
static PyObject *span_line(Table *t, struct conn *c, PyObject *name, long long start, long long end,
                           PyObject *status, PyObject *attrs, PyObject *msg)
{
    int rc = line_of(t, c, name, start, end, status, attrs, msg, 0, NULL);
    if (rc == OK)
        return PyBytes_FromStringAndSize(t->line.p, t->line.n);
    if (rc < 0)
        return NULL;
    PyObject *trace = hex_id(t, 16), *sid = trace ? hex_id(t, 8) : NULL;
    PyObject *span = sid ? made_span(t, c, name, start, end, status, attrs, msg, trace, sid) : NULL;
    PyObject *line = span ? PyObject_CallMethod(span, "json_line", NULL) : NULL;
    Py_XDECREF(trace);
    Py_XDECREF(sid);
    Py_XDECREF(span);
    return line;
}

/* add_ends then timed_span: with as_lines, the ends written after attrs without adding them to it
 * where that gives the same line. */
static PyObject *ends_span(Table *t, struct conn *c, PyObject *name, long long start, long long end,
                           PyObject *status, PyObject *attrs, PyObject *msg, PyObject *tid)
{
    if (t->as_lines) {
        int rc = line_of(t, c, name, start, end, status, attrs, msg, 1, tid);
        if (rc == OK)
            return PyBytes_FromStringAndSize(t->line.p, t->line.n);
        if (rc < 0)
            return NULL;
    }
    if (add_ends(c, attrs, tid) < 0)
        return NULL;
    return timed_span(t, c, name, start, end, status, attrs, msg);
}

/* build_span's attributes as JSON written without their dict, for what it does with them in the
 * common case: the request line's attributes (line[3]: their JSON) then the head's host, user
 * agent and traceparent, the status code (neither an error nor scrubbed), the connection's ends.
 * OK, OTHER (not such a case: build_span's way), -1 on error. */
static int http_attrs(struct buf *b, struct conn *c, PyObject *line, const unsigned char *rq, const struct head *qh,
                      PyObject *code)
{
    PyObject *open = PyTuple_GET_ITEM(line, 3);
    int rc;
    if (reserve(b, 16 + PyBytes_GET_SIZE(open)) < 0)
        return -1;
    put(b, PyBytes_AS_STRING(open), PyBytes_GET_SIZE(open));
    int first = PyBytes_GET_SIZE(open) == 1; /* "{": no attribute yet */
    static const int kept[3] = {HEAD_HOST, HEAD_AGENT, HEAD_PARENT};
    static const char *const keys[3] = {"\"http.request.header.host\":", "\"user_agent.original\":",
                                        "\"http.request.header.traceparent\":"};
    for (int k = 0; k < 3; k++) {
        if (qh->at[kept[k]] < 0)
            continue;
        ssize_t a = qh->at[kept[k]], z = qh->stop[kept[k]];
        head_strip(rq, &a, &z);
        size_t n = strlen(keys[k]);
        if (reserve(b, n + 1) < 0)
            return -1;
        if (!first)
            put(b, ",", 1);
        first = 0;
        put(b, keys[k], n);
        if (put_latin1(b, rq + a, z - a) < 0)
            return -1;
    }
    if (reserve(b, 32) < 0)
        return -1;
    if (!first)
        put(b, ",", 1);
    PUT_LIT(b, "\"http.response.status_code\":");
    if ((rc = put_int(b, code)) != OK)
        return rc;
    if (reserve(b, c->ends_len + 40) < 0)
        return -1;
    put(b, c->ends, c->ends_tail);
    if (c->request_tid) {
        PUT_LIT(b, ",\"thread.id\":");
        if (put_u64(b, 0, c->request_tid) < 0)
            return -1;
    }
    if (reserve(b, c->ends_len - c->ends_tail + 2) < 0)
        return -1;
    put(b, c->ends + c->ends_tail, c->ends_len - c->ends_tail);
    put(b, "}", 1);
    return OK;
}

/* build_span's `--json` line written without its attributes' dict (http_attrs). NULL with no
 * exception: not such a case (nor any id drawn): build_span's way. */
static PyObject *http_line(Table *t, struct conn *c, PyObject *line, const unsigned char *rq, const struct head *qh,
                           PyObject *code, long long start, long long end)
{
    PyObject *open = PyTuple_GET_ITEM(line, 3);
    int rc = conn_ends(c);
    if (rc != OK || open == Py_None)
        return NULL;
    struct buf *b = &t->line;
    b->n = 0;
    if (reserve(b, 160) < 0)
        return NULL;
    PUT_LIT(b, "{\"trace_id\":\"");
    size_t ids = b->n; /* drawn last, once the line is written */
    b->n += 32;
    PUT_LIT(b, "\",\"span_id\":\"");
    b->n += 16;
    PUT_LIT(b, "\",\"parent_span_id\":null,\"name\":");
    if ((rc = put_value(b, PyTuple_GET_ITEM(line, 0), 0)) != OK || reserve(b, 10) < 0)
        goto fail;
    PUT_LIT(b, ",\"kind\":");
    if ((rc = put_value(b, c->kind, 0)) != OK || reserve(b, 24) < 0)
        goto fail;
    PUT_LIT(b, ",\"start_time_unix_nano\":");
    if (put_i64(b, start) < 0 || reserve(b, 24) < 0)
        goto fail;
    PUT_LIT(b, ",\"end_time_unix_nano\":");
    if (put_i64(b, end > start ? end : start) < 0 || reserve(b, 48) < 0)
        goto fail;
    PUT_LIT(b, ",\"status_code\":\"UNSET\",\"attributes\":");
    if ((rc = http_attrs(b, c, line, rq, qh, code)) != OK || reserve(b, 16) < 0)
        goto fail;
    PUT_LIT(b, ",\"resource\":");
    if ((rc = put_resource(b, c->resource)) != OK || reserve(b, 2) < 0)
        goto fail;
    put(b, "}\n", 2);
    if (hex_fill(t, 16, b->p + ids) < 0 || hex_fill(t, 8, b->p + ids + 32 + 13) < 0)
        return NULL;
    return PyBytes_FromStringAndSize(b->p, b->n);
fail:
    if (rc == OTHER)
        PyErr_Clear();
    return NULL;
}

/* (str(addr), int(port)) of an end the table holds (a str and an int) */
static PyObject *row_end(PyObject *addr, PyObject *port)
{
    PyObject *a = PyObject_Str(addr), *p = a ? PyNumber_Long(port) : NULL, *t = p ? PyTuple_Pack(2, a, p) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(p);
    return t;
}

/* capture.rows' facts and peer of c's rows, once per connection: linker.conn_key of the attributes
 * add_ends gives, and store.api.peer_name of a CLIENT's (an HTTP/1 request line's attributes hold
 * none of the keys either reads: attrs_open says so). 0, -1 on error. */
static int row_conn(struct conn *c)
{
    if (c->row_key != NULL)
        return 0;
    PyObject *key = NULL, *peer = NULL;
    if (c->caddr && c->cport && c->saddr && c->sport && c->caddr != Py_None && c->cport != Py_None &&
        c->saddr != Py_None && c->sport != Py_None) {
        PyObject *e1 = row_end(c->caddr, c->cport), *e2 = e1 ? row_end(c->saddr, c->sport) : NULL;
        int lt = e2 ? PyObject_RichCompareBool(e2, e1, Py_LT) : -1;
        if (lt >= 0)
            key = PyTuple_Pack(3, c->transport, lt ? e2 : e1, lt ? e1 : e2);
        Py_XDECREF(e1);
        Py_XDECREF(e2);
        if (key == NULL)
            return -1;
    } else {
        key = Py_NewRef(Py_None);
    }
    int addr = c->kind == S_CLIENT && c->saddr ? PyObject_IsTrue(c->saddr) : 0;
    int port = addr > 0 && c->sport ? PyObject_IsTrue(c->sport) : 0;
    if (addr < 0 || port < 0) {
        Py_DECREF(key);
        return -1;
    }
    if (!addr) {
        peer = Py_NewRef(Py_None);
    } else if (!port) {
        peer = PyObject_Str(c->saddr);
    } else {
        PyObject *x = PyObject_Format(c->saddr, S_empty), *y = x ? PyObject_Format(c->sport, S_empty) : NULL;
        peer = y ? PyUnicode_FromFormat("%U:%U", x, y) : NULL;
        Py_XDECREF(x);
        Py_XDECREF(y);
    }
    if (peer == NULL) {
        Py_DECREF(key);
        return -1;
    }
    c->row_key = key;
    c->row_peer = peer;
    return 0;
}

/* build_span's span as the Row capture.rows.to_rows makes of it (attributes as JSON text written
 * here, http_attrs; the linker's facts and the peer of the connection), never the Span. NULL with no
 * exception: not such a case (nor any id drawn): build_span's way. */
static PyObject *http_row(Table *t, struct conn *c, PyObject *line, const unsigned char *rq, const struct head *qh,
                          PyObject *code, long long start, long long end)
{
    if (PyTuple_GET_ITEM(line, 3) == Py_None)
        return NULL;
    int rc = conn_ends(c);
    if (rc < 0)
        return NULL;
    if (rc != OK)
        return NULL;
    struct buf *b = &t->line;
    b->n = 0;
    if ((rc = http_attrs(b, c, line, rq, qh, code)) != OK) {
        if (rc == OTHER)
            PyErr_Clear();
        return NULL;
    }
    if (row_conn(c) < 0)
        return NULL;
    PyObject *text = PyUnicode_DecodeUTF8(b->p, b->n, "strict"), *tp = NULL, *facts = NULL, *thread = NULL;
    PyObject *row = NULL, *start_o = NULL, *end_o = NULL, *trace = NULL, *sid = NULL;
    if (text == NULL)
        goto done;
    if (qh->at[HEAD_PARENT] >= 0 && (tp = stripped(rq, qh->at[HEAD_PARENT], qh->stop[HEAD_PARENT])) == NULL)
        goto done;
    if (tp == NULL && c->row_facts != NULL && c->row_facts_tid == c->request_tid) {
        facts = Py_NewRef(c->row_facts); /* a connection's spans share their facts (rows.py's table) */
    } else {
        thread = c->request_tid && c->tid ? PyTuple_Pack(2, S_t, c->tid) : Py_NewRef(Py_None);
        facts = thread ? PyTuple_Pack(3, c->row_key, thread, tp ? tp : Py_None) : NULL;
        if (facts == NULL)
            goto done;
        if (tp == NULL) {
            Py_XSETREF(c->row_facts, Py_NewRef(facts));
            c->row_facts_tid = c->request_tid;
        }
    }
    start_o = PyLong_FromLongLong(start);
    end_o = start_o == NULL ? NULL : end > start ? PyLong_FromLongLong(end) : Py_NewRef(start_o);
    trace = end_o ? hex_id(t, 16) : NULL;
    sid = trace ? hex_id(t, 8) : NULL;
    if (sid == NULL)
        goto done;
    PyTypeObject *type = (PyTypeObject *)t->row_type;
    if ((row = type->tp_alloc(type, 0)) == NULL)
        goto done;
    PyObject *v[15] = {PyTuple_GET_ITEM(line, 0), c->kind, start_o, end_o, S_UNSET, S_empty, Py_None, c->resource,
                       trace, sid, Py_None, text, facts, Py_None, c->kind == S_CLIENT ? c->row_peer : Py_None};
    for (int k = 0; k < 15; k++)
        *(PyObject **)((char *)row + t->row_offsets[k]) = Py_NewRef(v[k]);
done:
    Py_XDECREF(text);
    Py_XDECREF(tp);
    Py_XDECREF(thread);
    Py_XDECREF(facts);
    Py_XDECREF(start_o);
    Py_XDECREF(end_o);
    Py_XDECREF(trace);
    Py_XDECREF(sid);
    return row;
}

#endif
