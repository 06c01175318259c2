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

/* build_span's `--json` line written without its attributes' dict, for what it does with them in
 * the common case: the request line's attributes (line[3]: their JSON) then the head's host,
 * user agent and traceparent, the status code (neither an error nor scrubbed), the connection's
 * ends. NULL with no exception: not such a case (nor any id drawn): build_span's way. */
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
    if (put_i64(b, end > start ? end : start) < 0 || reserve(b, 48 + PyBytes_GET_SIZE(open)) < 0)
        goto fail;
    PUT_LIT(b, ",\"status_code\":\"UNSET\",\"attributes\":");
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
            goto fail;
        if (!first)
            put(b, ",", 1);
        first = 0;
        put(b, keys[k], n);
        if (put_latin1(b, rq + a, z - a) < 0)
            goto fail;
    }
    if (reserve(b, 32) < 0)
        goto fail;
    if (!first)
        put(b, ",", 1);
    PUT_LIT(b, "\"http.response.status_code\":");
    if ((rc = put_int(b, code)) != OK || reserve(b, c->ends_len + 40) < 0)
        goto fail;
    put(b, c->ends, c->ends_tail);
    if (c->request_tid) {
        PUT_LIT(b, ",\"thread.id\":");
        if (put_u64(b, 0, c->request_tid) < 0)
            goto fail;
    }
    if (reserve(b, c->ends_len - c->ends_tail + 16) < 0)
        goto fail;
    put(b, c->ends + c->ends_tail, c->ends_len - c->ends_tail);
    PUT_LIT(b, "},\"resource\":");
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

#endif
