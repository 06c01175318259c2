/* Memcached's text protocol in capture/_fastpath.c (included there, after the table and the FIFO
 * taker), as capture/protocols/memcached.py's MemcachedParser and record_to_span make its spans. */
#ifndef GUARDIAN_FASTPATH_MEMCACHED_H
#define GUARDIAN_FASTPATH_MEMCACHED_H

/* ---- Memcached text protocol: FIFO (capture/protocols/memcached.py is the specification) ---- */
#define MC_MAX_WORDS 256      /* words of a command line read here; more go to Python */
#define MC_MAX_PENDING 4096   /* memcached.py MAX_PENDING */
#define MC_MAX_QUERY 1024     /* characters of db.query.text */

/* bytes.split()'s separators */
static inline int mc_space(unsigned char c) { return head_space(c); }

/* The words of line b[a:e] as bytes.split() makes them: their count (-1: more than max). */
static int mc_words(const unsigned char *b, Py_ssize_t a, Py_ssize_t e, Py_ssize_t (*w)[2], int max)
{
    int n = 0;
    while (a < e) {
        while (a < e && mc_space(b[a]))
            a++;
        if (a >= e)
            break;
        Py_ssize_t s = a;
        while (a < e && !mc_space(b[a]))
            a++;
        if (n == max)
            return -1;
        w[n][0] = s;
        w[n][1] = a - s;
        n++;
    }
    return n;
}

static int mc_is(const unsigned char *b, const Py_ssize_t *w, const char *s)
{
    return w[1] == (Py_ssize_t)strlen(s) && memcmp(b + w[0], s, w[1]) == 0;
}

/* A length int() reads alike: 1-18 digits. */
static int mc_length(const unsigned char *b, const Py_ssize_t *w, long long *out)
{
    return w[1] <= 18 && w[1] > 0 && all_in(b + w[0], w[1], '0', '9') && resp_int(b, w[0], w[0] + w[1], out);
}

/* (op, value-length word or 0, keys from word 1 or 2 to the end or only word 1, get-like, quit,
 * scrub): fastpath.memcached_shape's answer for a command word, cached; None: not a command. */
static PyObject *mc_shape(Table *t, const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = hash_bytes(s, n) ^ 0x6d63; /* its own keys in the shared cache */
    PyObject *v = n <= CACHED_LINE ? cache_get(&t->shapes, s, n, h) : NULL;
    if (v != NULL)
        return Py_NewRef(v);
    PyObject *word = PyBytes_FromStringAndSize((const char *)s, n);
    if (word == NULL)
        return NULL;
    v = PyObject_CallOneArg(t->memcached_shape, word);
    Py_DECREF(word);
    if (v == NULL)
        return NULL;
    if (v != Py_None && (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 6 || !PyUnicode_Check(PyTuple_GET_ITEM(v, 0)) ||
                         !PyLong_Check(PyTuple_GET_ITEM(v, 1)) || !PyLong_Check(PyTuple_GET_ITEM(v, 2)))) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_TypeError, "memcached_shape must return None or a 6-tuple");
        return NULL;
    }
    if (n <= CACHED_LINE)
        cache_put(&t->shapes, s, n, h, v);
    return v;
}

/* The span of memcached command r answered with `status` (values: VALUE lines; error: its
 * line), at end (memcached._record, then record_to_span); r's references are taken. */
static PyObject *mc_span(Table *t, struct conn *c, struct rcmd *r, PyObject *status, long values, PyObject *error,
                         long long end, PyObject *tid)
{
    PyObject *code = S_UNSET, *msg = Py_NewRef(S_empty), *span = NULL, *attrs = r->attrs, *rows = NULL;
    if (PyDict_SetItem(attrs, K_db_status, status) < 0)
        goto done;
    if (r->get) {
        int hit = values > 0 || PyUnicode_CompareWithASCIIString(status, "VA") == 0;
        if (PyDict_SetItem(attrs, K_mc_hit, hit ? Py_True : Py_False) < 0 || (rows = PyLong_FromLong(values)) == NULL ||
            PyDict_SetItem(attrs, K_rows, rows) < 0)
            goto done;
    }
    if (error != NULL) {
        code = S_ERROR;
        Py_SETREF(msg, Py_NewRef(PyUnicode_GET_LENGTH(error) ? error : status));
        if (PyDict_SetItem(attrs, K_error, status) < 0)
            goto done;
    }
    if (r->scrub && scrub_into(t, attrs, &msg) < 0)
        goto done;
    span = ends_span(t, c, r->name, r->start, end, code, attrs, msg, tid);
done:
    rcmd_clear(r);
    Py_XDECREF(msg);
    Py_XDECREF(rows);
    return span;
}

/* Memcached text commands of one request chunk: queued, or made spans at once (noreply). */
static int mc_requests(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                       PyObject *tid, PyObject *spans)
{
    Py_ssize_t w[MC_MAX_WORDS][2];
    for (Py_ssize_t at = 0; at < n;) {
        if (b[at] < 0x61 || b[at] > 0x7a) /* binary, or not a text verb */
            return 0;
        Py_ssize_t e = resp_line_end(b, n, at);
        int nw = e < 0 ? -1 : mc_words(b, at, e, w, MC_MAX_WORDS);
        if (nw < 1 || c->qlen >= MC_MAX_PENDING)
            return 0;
        PyObject *shape = mc_shape(t, b + w[0][0], w[0][1]);
        if (shape == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (shape == Py_None) {
            Py_DECREF(shape);
            return 0;
        }
        long vword = PyLong_AsLong(PyTuple_GET_ITEM(shape, 1)), from = PyLong_AsLong(PyTuple_GET_ITEM(shape, 2));
        Py_ssize_t next = e + 2;
        long long len;
        if (vword) {
            if (vword >= nw || !mc_length(b, w[vword], &len) || e + 2 + len + 2 > n) {
                Py_DECREF(shape);
                return 0;
            }
            next = e + 2 + len + 2;
        }
        int noreply = mc_is(b, w[nw - 1], "noreply");
        int last = from == 2 ? nw : (nw < 2 ? nw : 2); /* gat: words[2:]; retrieval: [1:]; else [1:2] */
        int first = from == 2 ? 2 : 1;
        if (from == 0) /* retrieval */
            last = nw;
        struct rcmd r = {0};
        PyObject *keys = PyList_New(0), *text = NULL;
        int rc = -1;
        if (keys == NULL)
            goto fail;
        for (int k = first; k < last; k++) {
            if (mc_is(b, w[k], "noreply"))
                continue;
            PyObject *key = PyUnicode_DecodeUTF8((const char *)b + w[k][0], w[k][1], "replace");
            if (key == NULL || PyList_Append(keys, key) < 0) {
                Py_XDECREF(key);
                goto fail;
            }
            Py_DECREF(key);
        }
        r.attrs = PyDict_New();
        r.name = Py_NewRef(PyTuple_GET_ITEM(shape, 0));
        r.get = PyTuple_GET_ITEM(shape, 3) == Py_True;
        r.scrub = PyTuple_GET_ITEM(shape, 5) == Py_True;
        r.start = ts;
        if (r.attrs == NULL || PyDict_SetItem(r.attrs, K_db_system, S_memcached) < 0 ||
            PyDict_SetItem(r.attrs, K_db_operation, r.name) < 0)
            goto fail;
        if (PyList_GET_SIZE(keys)) {
            PyObject *joined = PyUnicode_Join(S_space, keys);
            PyObject *full = joined ? PyUnicode_FromFormat("%U %U", r.name, joined) : NULL;
            Py_XDECREF(joined);
            text = full ? PyUnicode_Substring(full, 0, MC_MAX_QUERY) : NULL;
            Py_XDECREF(full);
            if (text == NULL || PyDict_SetItem(r.attrs, K_db_query, text) < 0)
                goto fail;
        }
        if (noreply)
            rc = append_span(spans, mc_span(t, c, &r, S_noreply, 0, NULL, ts, tid));
        else if (PyTuple_GET_ITEM(shape, 4) == Py_True) /* quit: no reply comes */
            rc = 1;
        else {
            rc = queue_push(c, &r) < 0 ? -1 : 1;
            if (rc == 1)
                r = (struct rcmd){0}; /* the queue holds its references */
        }
    fail:
        rcmd_clear(&r);
        Py_XDECREF(keys);
        Py_XDECREF(text);
        Py_DECREF(shape);
        if (rc <= 0) {
            PyErr_Clear(); /* Python's path takes the record and reports what failed */
            return 0;
        }
        at = next;
    }
    return 1;
}

/* bytes.isupper() or isdigit(), or a meta reply's prefix: what memcached._text_reply takes. */
static int mc_reply_word(const unsigned char *s, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    int upper = 0, lower = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        upper |= s[k] >= 'A' && s[k] <= 'Z';
        lower |= s[k] >= 'a' && s[k] <= 'z';
    }
    if ((upper && !lower) || all_in(s, n, '0', '9'))
        return 1;
    static const char *prefixes[] = {"HD", "EN", "NF", "MN"};
    for (int k = 0; k < 4; k++)
        if (n >= 2 && memcmp(s, prefixes[k], 2) == 0)
            return 1;
    return 0;
}

/* Memcached text replies of one response chunk: single lines, or VALUE/STAT ... END whole. */
static int mc_replies(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                      PyObject *tid, PyObject *spans)
{
    Py_ssize_t w[4][2];
    for (Py_ssize_t at = 0; at < n;) {
        if (c->qlen == 0 || b[at] < 0x30 || b[at] > 0x5a)
            return 0;
        Py_ssize_t e = resp_line_end(b, n, at);
        if (e < 0)
            return 0;
        const unsigned char *sp = memchr(b + at, ' ', e - at);
        Py_ssize_t wl = sp ? sp - (b + at) : e - at;
        PyObject *status, *error = NULL;
        long values = 0;
        Py_ssize_t next;
        Py_ssize_t word[2] = {at, wl};
        if (mc_is(b, word, "VALUE") || mc_is(b, word, "STAT") || mc_is(b, word, "END")) {
            for (;;) { /* each line of the multi-line reply, to its END */
                if (mc_is(b, word, "END"))
                    break;
                if (mc_is(b, word, "VALUE")) {
                    long long len;
                    int nw = mc_words(b, at, e, w, 4);
                    if (nw < 0) /* more than 4 words: the 4th is still the length */
                        nw = 4;
                    if (nw < 4 || !mc_length(b, w[3], &len) || e + 2 + len > n)
                        return 0;
                    e += len + 2;
                    values++;
                } else if (!mc_is(b, word, "STAT"))
                    return 0;
                at = e + 2;
                if (at >= n || b[at] == 0x80 || b[at] == 0x81 || b[at] == 0)
                    return 0;
                if ((e = resp_line_end(b, n, at)) < 0)
                    return 0;
                sp = memchr(b + at, ' ', e - at);
                word[0] = at;
                word[1] = sp ? sp - (b + at) : e - at;
            }
            status = Py_NewRef(S_END);
        } else if (mc_is(b, word, "VA")) { /* a meta get's value: "VA <size> <flags>*", then the data */
            long long len;
            int nw = mc_words(b, at, e, w, 4);
            if (nw < 0)
                nw = 4;
            if (nw < 2 || !mc_length(b, w[1], &len) || e + 2 + len + 2 > n)
                return 0;
            if ((status = PyUnicode_DecodeLatin1((const char *)b + at, wl, NULL)) == NULL)
                return -1;
            e += len + 2;
            values = 1;
        } else {
            if (!mc_reply_word(b + at, wl))
                return 0;
            if ((status = PyUnicode_DecodeLatin1((const char *)b + at, wl, NULL)) == NULL)
                return -1;
            if (mc_is(b, word, "ERROR") || mc_is(b, word, "CLIENT_ERROR") || mc_is(b, word, "SERVER_ERROR")) {
                if ((error = PyUnicode_DecodeUTF8((const char *)b + at, e - at, "replace")) == NULL) {
                    Py_DECREF(status);
                    return -1;
                }
            }
        }
        next = e + 2;
        int rc = append_span(spans, mc_span(t, c, queue_pop(c), status, values, error, ts, tid));
        Py_DECREF(status);
        Py_XDECREF(error);
        if (rc <= 0)
            return rc;
        at = next;
    }
    return 1;
}

static int take_memcached(Table *t, struct conn *c, PyObject *raw, const struct guardian_event *first, PyObject *out)
{
    return take_fifo(t, c, raw, first, out, mc_requests, mc_replies);
}
#endif
