/* Redis in capture/_fastpath.c (included there, after the table and the FIFO taker): commands
 * described as capture/protocols/redis.py's RedisParser and record_to_span would describe them,
 * replies paired in order; the RESP scan itself is capture/resp_scan.h. */
#ifndef GUARDIAN_FASTPATH_REDIS_H
#define GUARDIAN_FASTPATH_REDIS_H

/* ---- Redis: FIFO commands and replies (capture/protocols/redis.py is the specification) ---- */
#define REDIS_KEEP 4096         /* redis.py KEEP: bytes of a bulk string kept */
#define REDIS_MAX_ITEMS 1024    /* redis.py MAX_ITEMS: more arguments go to Python */
#define REDIS_MAX_QUERY 1024    /* redis.py MAX_QUERY: characters of db.query.text */
#define REDIS_MAX_PENDING 4096  /* redis.py MAX_PENDING: past it Python drops and counts */
#define REDIS_NATIVE_WORD 64    /* a longer command name or subcommand is described by Python */

/* (NAME, two-word, secret, scrub, python-only, publish) of a command name: fastpath.redis_shape's
 * answer, cached by the name's bytes. */
static PyObject *redis_shape(Table *t, const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = hash_bytes(s, n);
    PyObject *v = n <= CACHED_LINE ? cache_get(&t->shapes, s, n, h) : NULL;
    if (v != NULL)
        return Py_NewRef(v);
    PyObject *name = PyBytes_FromStringAndSize((const char *)s, n);
    if (name == NULL)
        return NULL;
    v = PyObject_CallOneArg(t->redis_shape, name);
    Py_DECREF(name);
    if (v == NULL)
        return NULL;
    if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 6 || !PyUnicode_Check(PyTuple_GET_ITEM(v, 0))) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_TypeError, "redis_shape must return (name, two, secret, scrub, python, publish)");
        return NULL;
    }
    if (n <= CACHED_LINE)
        cache_put(&t->shapes, s, n, h, v);
    return v;
}



/* db.operation.name and db.query.text as redis._operation / _query_text give them, made here when
 * the bytes that decide them are plain ASCII; 1 done, 0 not (Python's functions are asked). */
static int redis_native(PyObject *shape, const unsigned char *b, Py_ssize_t (*args)[2], long nargs,
                        PyObject **op, PyObject **text)
{
    const unsigned char *a0 = b + args[0][0];
    int two = PyTuple_GET_ITEM(shape, 1) == Py_True && nargs > 1, secret = PyTuple_GET_ITEM(shape, 2) == Py_True;
    if (args[0][1] == 0 || args[0][1] > REDIS_NATIVE_WORD || !all_in(a0, args[0][1], 0x21, 0x7e))
        return 0; /* a space in the name would change the words scrub.redis sees */
    char buf[2 * REDIS_NATIVE_WORD + 2 + 2 * REDIS_MAX_ITEMS + REDIS_MAX_QUERY];
    Py_ssize_t n = 0;
    if (two) {
        const unsigned char *a1 = b + args[1][0];
        if (args[1][1] > REDIS_NATIVE_WORD || !all_in(a1, args[1][1], 0, 0x7f))
            return 0;
        for (Py_ssize_t k = 0; k < args[0][1]; k++)
            buf[n++] = a0[k] >= 'a' && a0[k] <= 'z' ? a0[k] - 32 : a0[k];
        buf[n++] = ' ';
        for (Py_ssize_t k = 0; k < args[1][1]; k++)
            buf[n++] = a1[k] >= 'a' && a1[k] <= 'z' ? a1[k] - 32 : a1[k];
        *op = ascii(buf, n);
    } else
        *op = Py_NewRef(PyTuple_GET_ITEM(shape, 0));
    if (*op == NULL)
        return -1;
    if (secret) { /* the name and one "?" per argument after it */
        Py_ssize_t name_len = PyUnicode_GET_LENGTH(*op);
        if (!PyUnicode_IS_ASCII(*op) || name_len > (Py_ssize_t)sizeof(buf) - 2 * REDIS_MAX_ITEMS) {
            Py_CLEAR(*op);
            return 0;
        }
        memcpy(buf, PyUnicode_1BYTE_DATA(*op), name_len);
        n = name_len;
        for (long k = two ? 2 : 1; k < nargs; k++) {
            buf[n++] = ' ';
            buf[n++] = '?';
        }
    } else { /* the arguments joined by spaces, cut at REDIS_MAX_QUERY: ASCII only, so bytes are characters */
        n = 0;
        for (long k = 0; k < nargs && n < REDIS_MAX_QUERY; k++) {
            if (k)
                buf[n++] = ' ';
            Py_ssize_t take = args[k][1];
            if (take > REDIS_MAX_QUERY - n)
                take = REDIS_MAX_QUERY - n;
            memcpy(buf + n, b + args[k][0], take);
            n += take;
        }
        if (!all_in((const unsigned char *)buf, n, 0, 0x7f)) {
            Py_CLEAR(*op);
            return 0;
        }
    }
    *text = ascii(buf, n);
    if (*text == NULL) {
        Py_CLEAR(*op);
        return -1;
    }
    return 1;
}

/* A command into r (RedisParser._request, the attributes _record starts with): 1 done, 0 when
 * Python must see it (pub/sub, MONITOR, replication), -1 on error. */
static int redis_command(Table *t, const unsigned char *b, Py_ssize_t (*args)[2], long nargs, long long start,
                         struct rcmd *r)
{
    PyObject *shape = redis_shape(t, b + args[0][0], args[0][1]), *op = NULL, *text = NULL, *list = NULL;
    if (shape == NULL)
        return -1;
    int rc = -1;
    if (PyTuple_GET_ITEM(shape, 4) == Py_True) {
        rc = 0;
        goto done;
    }
    int native = redis_native(shape, b, args, nargs, &op, &text), publish;
    if (native < 0)
        goto done;
    PyObject *kept = PyTuple_GET_ITEM(shape, 3);
    if (kept == Py_None)
        r->scrub = 0;
    else { /* anything but a count the cut takes: scrub.record decides */
        long k = PyLong_Check(kept) ? PyLong_AsLong(kept) : -1;
        PyErr_Clear();
        r->scrub = k >= 1 && k <= REDIS_MAX_ITEMS ? (int)k : -1;
    }
    if (native) {
        publish = PyTuple_GET_ITEM(shape, 5) == Py_True;
    } else { /* redis.py's own functions on the arguments as its reader keeps them */
        if ((list = PyList_New(nargs)) == NULL)
            goto done;
        for (long k = 0; k < nargs; k++) {
            PyObject *a = PyBytes_FromStringAndSize((const char *)b + args[k][0],
                                                    args[k][1] < REDIS_KEEP ? args[k][1] : REDIS_KEEP);
            if (a == NULL)
                goto done;
            PyList_SET_ITEM(list, k, a);
        }
        if ((op = PyObject_CallOneArg(t->redis_operation, list)) == NULL ||
            (text = PyObject_CallOneArg(t->redis_query_text, list)) == NULL)
            goto done;
        if (!PyUnicode_Check(op)) {
            PyErr_SetString(PyExc_TypeError, "redis _operation must return a str");
            goto done;
        }
        r->scrub = -1;
        publish = PyUnicode_CompareWithASCIIString(op, "PUBLISH") == 0 ||
                  PyUnicode_CompareWithASCIIString(op, "SPUBLISH") == 0;
    }
    r->channel = NULL;
    if (publish && nargs > 1 &&
        (r->channel = PyUnicode_DecodeUTF8((const char *)b + args[1][0],
                                           args[1][1] < REDIS_KEEP ? args[1][1] : REDIS_KEEP, "replace")) == NULL)
        goto done;
    r->attrs = PyDict_New();
    if (r->attrs == NULL || PyDict_SetItem(r->attrs, K_db_system, S_redis) < 0 ||
        PyDict_SetItem(r->attrs, K_db_operation, op) < 0 || PyDict_SetItem(r->attrs, K_db_query, text) < 0) {
        rcmd_clear(r);
        goto done;
    }
    r->name = Py_NewRef(op);
    r->start = start;
    rc = 1;
done:
    Py_DECREF(shape);
    Py_XDECREF(op);
    Py_XDECREF(text);
    Py_XDECREF(list);
    return rc;
}

/* scrub.redis on an ASCII query text whose first word keeps `kept` words, while scrub.enabled():
 * the words past the kept ones become one "?". */
static int redis_cut(Table *t, PyObject *attrs, int kept)
{
    PyObject *on = PyObject_CallNoArgs(t->scrub_enabled);
    if (on == NULL)
        return -1;
    int yes = PyObject_IsTrue(on);
    Py_DECREF(on);
    if (yes <= 0)
        return yes;
    PyObject *text = PyDict_GetItemWithError(attrs, K_db_query); /* ASCII: redis_span checked */
    if (text == NULL)
        return PyErr_Occurred() ? -1 : 0;
    const char *s = (const char *)PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), at = -1;
    for (int words = 0; words < kept; words++) { /* the space after the kept-th word */
        const char *sp = memchr(s + at + 1, ' ', n - at - 1);
        if (sp == NULL)
            return 0; /* no more words than kept: as it is */
        at = sp - s;
    }
    PyObject *cut = PyUnicode_New(at + 2, 127);
    if (cut == NULL)
        return -1;
    memcpy(PyUnicode_1BYTE_DATA(cut), s, at);
    memcpy(PyUnicode_1BYTE_DATA(cut) + at, " ?", 2);
    int rc = PyDict_SetItem(attrs, K_db_query, cut);
    Py_DECREF(cut);
    return rc;
}

/* The span of command r answered by the value `top` (its bytes in b) at end (_record, then
 * record_to_span); r's references are taken. */
static PyObject *redis_span(Table *t, struct conn *c, struct rcmd *r, const unsigned char *b,
                            const struct resp_top *top, long long end, PyObject *tid)
{
    PyObject *status = S_UNSET, *msg = Py_NewRef(S_empty), *err = NULL, *parts = NULL, *span = NULL;
    PyObject *attrs = r->attrs;
    if (top->type == '-' || (top->type == '!' && top->text_len >= 0)) {
        Py_ssize_t n = top->type == '!' && top->text_len > REDIS_KEEP ? REDIS_KEEP : top->text_len;
        if ((err = PyUnicode_DecodeUTF8((const char *)b + top->text, n, "replace")) == NULL ||
            (parts = PyUnicode_Split(err, S_space, 1)) == NULL)
            goto done;
        PyObject *prefix = PyList_GET_ITEM(parts, 0);
        status = S_ERROR;
        Py_SETREF(msg, PyUnicode_Substring(err, 0, 256));
        if (msg == NULL || PyDict_SetItem(attrs, K_error, prefix) < 0 ||
            PyDict_SetItem(attrs, K_db_status, prefix) < 0)
            goto done;
    } else if (r->channel != NULL) {
        if (PyDict_SetItem(attrs, K_msg_system, S_redis) < 0 || PyDict_SetItem(attrs, K_msg_dest, r->channel) < 0 ||
            PyDict_SetItem(attrs, K_msg_op, S_send) < 0)
            goto done;
    }
    PyObject *text = r->scrub > 0 ? PyDict_GetItemWithError(attrs, K_db_query) : NULL;
    if (r->scrub < 0 || (r->scrub > 0 && (text == NULL || !PyUnicode_Check(text) || !PyUnicode_IS_ASCII(text)))) {
        if (scrub_into(t, attrs, &msg) < 0)
            goto done;
    } else if (r->scrub > 0 && redis_cut(t, attrs, r->scrub) < 0)
        goto done;
    span = ends_span(t, c, r->name, r->start, end, status, attrs, msg, tid);
done:
    rcmd_clear(r);
    Py_XDECREF(msg);
    Py_XDECREF(err);
    Py_XDECREF(parts);
    return span;
}


/* Redis commands of one request chunk b[:n] (sent at ts) onto c's queue: 1, 0 (Python's to
 * parse), -1 on error. */
static int redis_requests(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                          PyObject *tid, PyObject *spans)
{
    Py_ssize_t (*args)[2] = PyMem_Malloc(REDIS_MAX_ITEMS * sizeof(*args));
    int rc = 1;
    if (args == NULL)
        return -1;
    for (Py_ssize_t at = 0; at < n && rc == 1;) {
        long nargs;
        Py_ssize_t next = resp_command(b, n, at, args, REDIS_MAX_ITEMS, &nargs);
        struct rcmd r = {0};
        if (next < 0 || c->qlen >= REDIS_MAX_PENDING)
            rc = 0;
        else if ((rc = redis_command(t, b, args, nargs, ts, &r)) == 1 && queue_push(c, &r) < 0) {
            rcmd_clear(&r);
            rc = -1;
        }
        at = next;
    }
    PyMem_Free(args);
    return rc;
}



/* Redis replies of one response chunk b[:n] (read at ts): a span per reply, in order. */
static int redis_replies(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                         PyObject *tid, PyObject *spans)
{
    for (Py_ssize_t at = 0; at < n;) {
        struct resp_top top;
        Py_ssize_t next = resp_value(b, n, at, 0, &top);
        if (next < 0 || c->qlen == 0) /* garbage, a cut value, a reply to nothing */
            return 0;
        int rc = append_span(spans, redis_span(t, c, queue_pop(c), b, &top, ts, tid));
        if (rc <= 0)
            return rc;
        at = next;
    }
    return 1;
}


static int take_redis(Table *t, struct conn *c, PyObject *raw, const struct guardian_event *first, PyObject *out)
{
    return take_fifo(t, c, raw, first, out, redis_requests, redis_replies);
}
#endif
