/* capture._fastpath: HTTP/1, Redis, Memcached, PostgreSQL simple-query and MySQL text-query
 * exchanges from ring records straight to spans, in C.
 *
 * The common case of the capture's hot path: a keep-alive HTTP/1 connection whose parser has
 * nothing buffered or waiting, a request and its response with whole heads and bodies framed by
 * Content-Length, sent as one EV_PAIR record (bpf: pairing) or as chunks (EV_DATA: the request
 * chunk waits here for its response's, as the kernel's pairing would wait; a body may follow its
 * head in more chunks). For it, Table.run() does what ConnTracker.on_event / _exchange ->
 * Pipeline -> Http1Parser -> record_to_span do (capture/conntrack.py, pipeline.py,
 * protocols/http1.py, stitch.py: the specification), and appends the Span to the pipeline's
 * batch without making any other Python object per record.
 *
 * Everything else goes back to Python, in order: run() stops at the first record it does not
 * take, and a connection this table holds is first handed back (its stream positions, last
 * activity and request thread written into its Python objects, and the records of an exchange
 * it had begun given back to be taken first), so Python sees each connection as if it had
 * handled every record itself. The names and attributes of a request line and a status line come
 * from the Python parser's own functions, cached here by the line's bytes; scrubbing runs
 * capture.scrub.record whenever its rules could change the attributes.
 *
 * FIFO protocols (Redis, Memcached text, PostgreSQL simple queries, MySQL COM_QUERY; protocols/redis.py,
 * memcached.py, postgres.py, mysql.py) take records whose chunks hold whole messages (a MySQL
 * packet's header may come alone, its payload next): commands wait here in
 * order for their replies, and the records taken since the connection last had nothing waiting
 * stay held; a hand-back gives them to Python to replay (the spans they make dropped: they were
 * made here), which puts the connection's parser where it would be had it seen every record.
 * capture/fastpath.py decides which connections a table may hold.
 *
 * With as_lines set (ConnTracker.spans_as_lines: `guardian capture --json`, whose printer is the
 * only reader), a span is never made: its `--json` line is written here (capture/fastpath_lines.h) and
 * appended as bytes, the same bytes Span.json_line() gives (anything unusual: the Span's own). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/random.h>

#include "types.h" /* bpf/types.h: struct guardian_event and its enums, the one ABI */
#include "http1_scan.h"
#include "resp_scan.h"
#include "sql_scan.h"
#include "json_write.h"
#include <strings.h>

#define HDR ((Py_ssize_t)sizeof(struct guardian_event))
#define CACHED_LINE 512 /* capture/protocols/http1.py CACHED_LINE: longer lines are not cached */

/* run()'s verdicts on the record it stopped at */
enum { DONE = 0, PYTHON = 1, RELEASED = 2, UNKNOWN = 3 };

/* ---- cache of Python answers by a line's bytes ------------------------------------------ */
struct line_entry {
    uint64_t hash;
    Py_ssize_t len;
    unsigned char *bytes;
    PyObject *value;
};

struct line_cache {
    struct line_entry *slots;
    size_t cap, used;
    unsigned long long evicted; /* entries dropped when a full cache was emptied */
};

static uint64_t hash_bytes(const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static void cache_clear(struct line_cache *c)
{
    for (size_t i = 0; i < c->cap; i++) {
        if (c->slots[i].bytes != NULL) {
            PyMem_Free(c->slots[i].bytes);
            Py_CLEAR(c->slots[i].value);
            c->slots[i].bytes = NULL;
        }
    }
    c->used = 0;
}

static PyObject *cache_get(struct line_cache *c, const unsigned char *s, Py_ssize_t n, uint64_t h)
{
    for (size_t i = h & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        struct line_entry *e = &c->slots[i];
        if (e->bytes == NULL)
            return NULL;
        if (e->hash == h && e->len == n && memcmp(e->bytes, s, n) == 0)
            return e->value;
    }
}

/* Keeps a new reference to value; a full cache is emptied first (memory stays bounded). */
static void cache_put(struct line_cache *c, const unsigned char *s, Py_ssize_t n, uint64_t h, PyObject *value)
{
    if (2 * (c->used + 1) > c->cap) {
        c->evicted += c->used;
        cache_clear(c);
    }
    unsigned char *copy = PyMem_Malloc(n ? n : 1);
    if (copy == NULL)
        return; /* not cached: the next time asks Python again */
    memcpy(copy, s, n);
    size_t i = h & (c->cap - 1);
    while (c->slots[i].bytes != NULL)
        i = (i + 1) & (c->cap - 1);
    c->slots[i] = (struct line_entry){h, n, copy, Py_NewRef(value)};
    c->used++;
}

/* A Redis command waiting for its reply: what its span will say (RedisParser._record). */
struct rcmd {
    long long start;
    PyObject *name, *attrs; /* db.system, db.operation.name, db.query.text so far */
    PyObject *channel;      /* PUBLISH's channel (messaging.*), or NULL */
    int scrub;              /* 0: scrub.record would change nothing; 1 (or Redis' -1): it is called;
                             * Redis' n > 1: the query text's words past the n-th become "?"
                             * (scrub.redis_kept), while scrub.enabled(); MySQL: the command */
    int get;                /* Memcached: a retrieval (memcached.hit, db.response.returned_rows);
                             * PostgreSQL: DataRows so far (name: the query; attrs: its tag;
                             * channel: its error's code and message); MySQL: rows so far (name:
                             * the query; attrs: its last OK's affected rows; channel: its error) */
};

static void rcmd_clear(struct rcmd *r)
{
    Py_CLEAR(r->name);
    Py_CLEAR(r->attrs);
    Py_CLEAR(r->channel);
}

/* ---- connections held by the table ----------------------------------------------------- */
#define HOLD_MAX 64 /* records of one unfinished exchange held at most (then Python takes over) */

/* An exchange in progress, chunk by chunk (what Http1Parser's framing does for a request and
 * its response when they are not one chunk each). Request and response heads are found again
 * in their records (borrowed: held[] or the record being taken) when the span is made. */
enum { IDLE, REQ_BODY, WAIT, RESP_BODY, COMPLETE };
struct exch {
    int phase;
    uint64_t left;       /* body bytes still to come (REQ_BODY, RESP_BODY) */
    uint64_t expect[2];  /* stream positions after the chunks taken */
    uint32_t tid;        /* the latest thread of the request's chunks (0: none) */
    long long req_ts, end_ts, last_ts;
    PyObject *req_rec, *resp_rec;
    Py_ssize_t req_off, resp_off; /* where the chunk's event header starts in its record */
};
struct conn {
    uint64_t id;
    uint64_t pos[2];       /* next expected stream offset: egress, ingress (0: not known yet) */
    long long last_seen;   /* Connection.last_seen_ns */
    uint32_t request_tid;  /* Connection.request_tid */
    int server;            /* role SERVER: requests are read, responses written */
    int source_syscall;    /* Connection.source == "syscall": a TLS source on a record is an upgrade */
    PyObject *tracked;     /* conntrack._Tracked (its pos list) */
    PyObject *conn;        /* capture.connection.Connection */
    PyObject *tid;         /* request_tid as an int, made when it changes */
    struct exch x;         /* the exchange in progress over the records in held[] */
    PyObject *held[HOLD_MAX]; /* records whose chunks x has taken, no span yet: Python's on hand-back */
    int nheld;
    /* what record_to_span reads of the connection, fixed while it is held */
    PyObject *kind, *resource, *saddr, *sport, *caddr, *cport, *transport, *tls_library;
    int proto;             /* PROTO_HTTP1, PROTO_REDIS, PROTO_MEMCACHED, PROTO_POSTGRES or PROTO_MYSQL */
    PyObject *database;    /* PostgreSQL, MySQL: db.namespace (the startup packet's), or NULL */
    PyObject *system;      /* MySQL: db.system (mysql or mariadb), or NULL */
    uint64_t my_left;      /* MySQL: column definitions still to come */
    int my_state;          /* MySQL: where its reply is (fastpath_mysql.h) */
    int my_hdr_len;        /* MySQL: 4 when the last request chunk was a packet's header alone */
    unsigned char my_hdr[4];
    long long my_hdr_ts;
    struct rcmd *q;        /* Redis: commands waiting for their reply, a ring of qcap */
    size_t qhead, qlen, qcap;
    PyObject *epoch;       /* Connection.epoch when not 0 (records lost before), else NULL */
    char *ends;            /* add_ends' attributes as JSON (each with its comma): those before thread.id,
                            * then those after from ends[ends_tail]; NULL: not written yet */
    size_t ends_len, ends_tail;
    int ends_other;        /* a value of them the JSON writer leaves to orjson: no line written here */
    /* Table.rows_as: what a row of this connection says of it (capture/rows.py's facts and peer) */
    PyObject *row_key, *row_peer, *row_facts; /* row_facts: with thread row_facts_tid, no traceparent */
    uint32_t row_facts_tid;
};

typedef struct {
    PyObject_HEAD
    struct conn **slots; /* open addressing, linear probing; NULL: empty */
    size_t cap, count;
    long long offset_ns;
    PyObject *span_type, *request_line, *request_line_long, *status_of, *status_of_long, *scrub;
    PyObject *redis_shape, *redis_operation, *redis_query_text; /* capture/fastpath.py, protocols/redis.py */
    PyObject *memcached_shape, *sql_summary, *scrub_enabled;
    Py_ssize_t span_offsets[11]; /* each Span field's slot, or -1: build spans by calling the type */
    struct line_cache lines, statuses, shapes;
    unsigned char rnd[4096];
    size_t rnd_at;
    unsigned rnd_forks; /* forks_seen when rnd was filled: a child draws its own ids */
    int seeded;         /* seed_ids() was called: rnd is refilled from seed, not getrandom */
    uint64_t seed;
    unsigned long long spans, handed, released;
    char as_lines;        /* spans made as their `--json` lines (bytes), never as Span objects */
    PyObject *row_type;   /* Table.rows_as: HTTP/1 exchanges made as these Rows, not Spans (NULL: Spans) */
    Py_ssize_t row_offsets[15];
    struct buf line;      /* where a line is written (kept: its size is reached once) */
} Table;

static PyObject *S_pos, *S_last_seen, *S_request_tid, *S_UNSET, *S_ERROR, *S_empty, *S_CLIENT, *S_t;
static PyObject *K_host, *K_agent, *K_parent, *K_status, *K_error, *K_saddr, *K_sport, *K_caddr, *K_cport,
    *K_transport, *K_tid, *K_tls, *K_epoch, *K_url_full, *K_url_path, *K_url_query, *K_db_system;
static PyObject *S_memcached, *S_noreply, *S_END, *K_mc_hit, *K_rows;
static PyObject *S_postgresql, *K_db_namespace, *K_db_collection;
static PyObject *S_QUERY, *S_PING, *K_mysql_command, *K_sqlstate;
static PyObject *S_redis, *S_send, *S_space, *K_db_operation, *K_db_query, *K_db_status, *K_msg_system,
    *K_msg_dest, *K_msg_op;

static inline size_t slot_of(uint64_t id, size_t cap)
{
    id ^= id >> 33; /* splitmix64's finalizer: ids may be sequential */
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return id & (cap - 1);
}

static struct conn *find(Table *t, uint64_t id, size_t *at)
{
    for (size_t i = slot_of(id, t->cap);; i = (i + 1) & (t->cap - 1)) {
        struct conn *c = t->slots[i];
        if (c == NULL)
            return NULL;
        if (c->id == id) {
            if (at)
                *at = i;
            return c;
        }
    }
}

static int grow(Table *t)
{
    size_t cap = t->cap * 2;
    struct conn **slots = PyMem_Calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        struct conn *c = t->slots[i];
        if (c == NULL)
            continue;
        size_t j = slot_of(c->id, cap);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = c;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static void conn_free(struct conn *c)
{
    Py_XDECREF(c->tracked);
    Py_XDECREF(c->conn);
    Py_XDECREF(c->tid);
    for (int k = 0; k < c->nheld; k++)
        Py_DECREF(c->held[k]);
    c->nheld = 0;
    Py_XDECREF(c->kind);
    Py_XDECREF(c->resource);
    Py_XDECREF(c->saddr);
    Py_XDECREF(c->sport);
    Py_XDECREF(c->caddr);
    Py_XDECREF(c->cport);
    Py_XDECREF(c->transport);
    Py_XDECREF(c->tls_library);
    Py_XDECREF(c->database);
    Py_XDECREF(c->system);
    for (size_t k = 0; k < c->qlen; k++)
        rcmd_clear(&c->q[(c->qhead + k) % c->qcap]);
    PyMem_Free(c->q);
    Py_XDECREF(c->epoch);
    PyMem_Free(c->ends);
    Py_XDECREF(c->row_key);
    Py_XDECREF(c->row_peer);
    Py_XDECREF(c->row_facts);
    PyMem_Free(c);
}

/* The connection's state back into its Python objects. */
static int write_back(struct conn *c)
{
    PyObject *pos = PyObject_GetAttr(c->tracked, S_pos);
    if (pos == NULL)
        return -1;
    int rc = -1;
    PyObject *p0 = PyLong_FromUnsignedLongLong(c->pos[0]), *p1 = PyLong_FromUnsignedLongLong(c->pos[1]);
    PyObject *seen = PyLong_FromLongLong(c->last_seen), *tid = PyLong_FromUnsignedLong(c->request_tid);
    if (p0 && p1 && seen && tid && PySequence_SetItem(pos, 0, p0) == 0 &&
        PySequence_SetItem(pos, 1, p1) == 0 && PyObject_SetAttr(c->conn, S_last_seen, seen) == 0 &&
        PyObject_SetAttr(c->conn, S_request_tid, tid) == 0)
        rc = 0;
    Py_XDECREF(p0);
    Py_XDECREF(p1);
    Py_XDECREF(seen);
    Py_XDECREF(tid);
    Py_DECREF(pos);
    return rc;
}

/* The records a connection holds, as a list for Python to take in order (NULL: none); emptied. */
static PyObject *take_held(struct conn *c, int *rc)
{
    if (c->nheld == 0)
        return NULL;
    PyObject *list = PyList_New(c->nheld);
    if (list == NULL) {
        *rc = -1;
        return NULL;
    }
    for (int k = 0; k < c->nheld; k++)
        PyList_SET_ITEM(list, k, c->held[k]); /* the reference moves */
    c->nheld = 0;
    c->x.phase = IDLE;
    return list;
}

/* Remove the connection at slot i (backward-shift deletion keeps probing chains whole); the
 * records it holds go to *held (a new list, or NULL) for Python to take first. */
static int release_at(Table *t, size_t i, PyObject **held)
{
    struct conn *c = t->slots[i];
    int rc = write_back(c);
    *held = take_held(c, &rc);
    conn_free(c);
    t->slots[i] = NULL;
    t->count--;
    t->released++;
    size_t j = i;
    for (;;) {
        j = (j + 1) & (t->cap - 1);
        struct conn *d = t->slots[j];
        if (d == NULL)
            break;
        size_t home = slot_of(d->id, t->cap);
        /* d may move into the hole at i when its home is not in (i, j] (cyclically) */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            t->slots[i] = d;
            t->slots[j] = NULL;
            i = j;
        }
    }
    return rc;
}

/* ---- span pieces --------------------------------------------------------------------- */
static const char HEX[] = "0123456789abcdef";
static volatile unsigned forks_seen; /* counted in each child (pthread_atfork) */

static void after_fork_in_child(void) { forks_seen++; }

static char HEX_PAIRS[256][2]; /* a byte's two hex digits */

static void init_hex_pairs(void)
{
    for (int b = 0; b < 256; b++) {
        HEX_PAIRS[b][0] = HEX[b >> 4];
        HEX_PAIRS[b][1] = HEX[b & 15];
    }
}

/* 2 * nbytes hex digits of new random bytes at out (never all zeros: an all-zero id means "none"
 * in OpenTelemetry); -1 with an exception. */
static int hex_fill(Table *t, int nbytes, char *out)
{
    if (t->rnd_at + nbytes > sizeof(t->rnd) || t->rnd_forks != forks_seen) {
        size_t got = t->seeded ? sizeof(t->rnd) : 0;
        for (size_t k = 0; k < got; k += 8) { /* seed_ids: splitmix64 */
            uint64_t z = (t->seed += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            memcpy(t->rnd + k, &z, 8);
        }
        while (got < sizeof(t->rnd)) {
            ssize_t n = getrandom(t->rnd + got, sizeof(t->rnd) - got, 0);
            if (n <= 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            got += n;
        }
        t->rnd_at = 0;
        t->rnd_forks = forks_seen;
    }
    const unsigned char *r = t->rnd + t->rnd_at;
    unsigned any = 0;
    for (int k = 0; k < nbytes; k++) {
        any |= r[k];
        memcpy(out + 2 * k, HEX_PAIRS[r[k]], 2);
    }
    if (!any)
        out[2 * nbytes - 1] = '1';
    t->rnd_at += nbytes;
    return 0;
}

static PyObject *hex_id(Table *t, int nbytes)
{
    char out[32];
    if (hex_fill(t, nbytes, out) < 0)
        return NULL;
    return PyUnicode_DecodeASCII(out, 2 * nbytes, NULL);
}

static PyObject *attrs_open(PyObject *attrs); /* fastpath_lines.h */

/* (name, attrs, needs_scrub, attrs_open) of a request line: http1._request_line's answer, cached here. */
static PyObject *request_line(Table *t, const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = hash_bytes(s, n);
    PyObject *v = n <= CACHED_LINE ? cache_get(&t->lines, s, n, h) : NULL;
    if (v != NULL)
        return Py_NewRef(v);
    PyObject *line = PyBytes_FromStringAndSize((const char *)s, n);
    if (line == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(n <= CACHED_LINE ? t->request_line : t->request_line_long, line);
    Py_DECREF(line);
    if (r == NULL)
        return NULL;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2 || !PyDict_Check(PyTuple_GET_ITEM(r, 1))) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "_request_line must return (name, attrs)");
        return NULL;
    }
    /* scrub.record could change these attributes only through these keys (capture/scrub.py) */
    PyObject *attrs = PyTuple_GET_ITEM(r, 1);
    int scrub = PyDict_GetItemWithError(attrs, K_url_full) != NULL || PyDict_GetItemWithError(attrs, K_db_system) != NULL;
    PyObject *path = PyDict_GetItemWithError(attrs, K_url_path), *query = PyDict_GetItemWithError(attrs, K_url_query);
    if (path != NULL && (!PyUnicode_Check(path) || PyUnicode_FindChar(path, '@', 0, PY_SSIZE_T_MAX, 1) != -1 ||
                         PyUnicode_FindChar(path, '?', 0, PY_SSIZE_T_MAX, 1) != -1))
        scrub = 1;
    if (query != NULL && (!PyUnicode_Check(query) || PyUnicode_FindChar(query, '=', 0, PY_SSIZE_T_MAX, 1) != -1))
        scrub = 1;
    if (PyErr_Occurred()) {
        Py_DECREF(r);
        return NULL;
    }
    PyObject *open = scrub ? Py_NewRef(Py_None) : attrs_open(attrs);
    v = open == NULL ? NULL : Py_BuildValue("(OOOO)", PyTuple_GET_ITEM(r, 0), attrs, scrub ? Py_True : Py_False, open);
    Py_XDECREF(open);
    Py_DECREF(r);
    if (v != NULL && n <= CACHED_LINE)
        cache_put(&t->lines, s, n, h, v);
    return v;
}

/* (code, reason) of a status line: http1._status_of's answer, cached here. */
static PyObject *status_line(Table *t, const unsigned char *s, Py_ssize_t n)
{
    uint64_t h = hash_bytes(s, n);
    PyObject *v = n <= CACHED_LINE ? cache_get(&t->statuses, s, n, h) : NULL;
    if (v != NULL)
        return Py_NewRef(v);
    PyObject *line = PyBytes_FromStringAndSize((const char *)s, n);
    if (line == NULL)
        return NULL;
    v = PyObject_CallOneArg(n <= CACHED_LINE ? t->status_of : t->status_of_long, line);
    Py_DECREF(line);
    if (v == NULL)
        return NULL;
    if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 2 || !PyLong_Check(PyTuple_GET_ITEM(v, 0))) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_TypeError, "_status_of must return (code, reason)");
        return NULL;
    }
    if (n <= CACHED_LINE)
        cache_put(&t->statuses, s, n, h, v);
    return v;
}

static PyObject *stripped(const unsigned char *h, Py_ssize_t a, Py_ssize_t b)
{
    head_strip(h, &a, &b);
    return PyUnicode_DecodeLatin1((const char *)h + a, b - a, NULL);
}

static int set_default(PyObject *d, PyObject *key, PyObject *value)
{
    return PyDict_SetDefault(d, key, value) == NULL ? -1 : 0;
}

/* record_to_span's attributes from the connection: its ends, transport, request thread, TLS library. */
static int add_ends(struct conn *c, PyObject *attrs, PyObject *tid)
{
    if ((c->saddr && (set_default(attrs, K_saddr, c->saddr) < 0 || set_default(attrs, K_sport, c->sport) < 0)) ||
        (c->caddr && (set_default(attrs, K_caddr, c->caddr) < 0 || set_default(attrs, K_cport, c->cport) < 0)) ||
        set_default(attrs, K_transport, c->transport) < 0 || (tid && set_default(attrs, K_tid, tid) < 0) ||
        (c->tls_library && set_default(attrs, K_tls, c->tls_library) < 0) ||
        (c->epoch && set_default(attrs, K_epoch, c->epoch) < 0))
        return -1;
    return 0;
}

static PyObject *new_span(Table *t, PyObject *const *values)
{
    if (t->span_offsets[0] < 0)
        return PyObject_Vectorcall(t->span_type, values, 11, NULL);
    PyTypeObject *type = (PyTypeObject *)t->span_type;
    PyObject *span = type->tp_alloc(type, 0);
    if (span == NULL)
        return NULL;
    for (int k = 0; k < 11; k++)
        *(PyObject **)((char *)span + t->span_offsets[k]) = Py_NewRef(values[k]);
    return span;
}

/* scrub.record: the span's attributes scrubbed in place, its status message replaced by the scrubbed one. */
static int scrub_into(Table *t, PyObject *attrs, PyObject **msg)
{
    PyObject *m = PyObject_CallFunctionObjArgs(t->scrub, attrs, *msg, NULL);
    if (m == NULL)
        return -1;
    Py_SETREF(*msg, m);
    return 0;
}

static PyObject *made_span(Table *t, struct conn *c, PyObject *name, long long start, long long end,
                           PyObject *status, PyObject *attrs, PyObject *msg, PyObject *trace, PyObject *sid)
{
    PyObject *span = NULL, *start_o = PyLong_FromLongLong(start);
    PyObject *end_o = start_o == NULL ? NULL : end > start ? PyLong_FromLongLong(end) : Py_NewRef(start_o);
    if (start_o != NULL && end_o != NULL) {
        PyObject *values[11] = {name, c->kind, start_o, end_o, status, attrs, c->resource, trace, sid, Py_None, msg};
        span = new_span(t, values);
    }
    Py_XDECREF(start_o);
    Py_XDECREF(end_o);
    return span;
}

static PyObject *span_line(Table *t, struct conn *c, PyObject *name, long long start, long long end,
                           PyObject *status, PyObject *attrs, PyObject *msg); /* fastpath_lines.h */

/* A span from what a protocol made of one exchange, with new trace and span ids; an end not after the
 * start is the start. With as_lines, its `--json` line instead. */
static PyObject *timed_span(Table *t, struct conn *c, PyObject *name, long long start, long long end,
                            PyObject *status, PyObject *attrs, PyObject *msg)
{
    if (t->as_lines)
        return span_line(t, c, name, start, end, status, attrs, msg);
    PyObject *span = NULL, *start_o = PyLong_FromLongLong(start);
    PyObject *end_o = start_o == NULL ? NULL : end > start ? PyLong_FromLongLong(end) : Py_NewRef(start_o);
    PyObject *trace = hex_id(t, 16);
    PyObject *sid = trace ? hex_id(t, 8) : NULL;
    if (start_o != NULL && end_o != NULL && sid != NULL) {
        PyObject *values[11] = {name, c->kind, start_o, end_o, status, attrs, c->resource, trace, sid, Py_None, msg};
        span = new_span(t, values);
    }
    Py_XDECREF(start_o);
    Py_XDECREF(end_o);
    Py_XDECREF(trace);
    Py_XDECREF(sid);
    return span;
}

#include "fastpath_lines.h"

/* The span of one exchange (Http1Parser._record, then record_to_span). */
static PyObject *build_span(Table *t, struct conn *c, const unsigned char *rq, const struct head *qh,
                            const unsigned char *rs, const struct head *sh, long long start, long long end)
{
    PyObject *line = NULL, *status = NULL, *attrs = NULL, *msg = NULL, *span = NULL, *code_text = NULL;
    PyObject *status_code = S_UNSET;
    line = request_line(t, rq, qh->first_len);
    if (line == NULL)
        goto done;
    if (t->as_lines || t->row_type != NULL) {
        if ((status = status_line(t, rs, sh->first_len)) == NULL)
            goto done;
        long v = PyLong_AsLong(PyTuple_GET_ITEM(status, 0));
        if (v == -1 && PyErr_Occurred())
            goto done;
        if (v > 0 && v < (c->kind == S_CLIENT ? 400 : 500)) {
            span = t->as_lines ? http_line(t, c, line, rq, qh, PyTuple_GET_ITEM(status, 0), start, end)
                               : http_row(t, c, line, rq, qh, PyTuple_GET_ITEM(status, 0), start, end);
            if (span != NULL || PyErr_Occurred())
                goto done;
        }
        Py_CLEAR(status);
    }
    attrs = PyDict_Copy(PyTuple_GET_ITEM(line, 1));
    if (attrs == NULL)
        goto done;
    static const int kept[3] = {HEAD_HOST, HEAD_AGENT, HEAD_PARENT};
    PyObject *keys[3] = {K_host, K_agent, K_parent};
    for (int k = 0; k < 3; k++) {
        if (qh->at[kept[k]] < 0)
            continue;
        PyObject *v = stripped(rq, qh->at[kept[k]], qh->stop[kept[k]]);
        if (v == NULL || PyDict_SetItem(attrs, keys[k], v) < 0) {
            Py_XDECREF(v);
            goto done;
        }
        Py_DECREF(v);
    }
    status = status_line(t, rs, sh->first_len);
    if (status == NULL)
        goto done;
    PyObject *code = PyTuple_GET_ITEM(status, 0);
    long code_v = PyLong_AsLong(code);
    if (code_v == -1 && PyErr_Occurred())
        goto done;
    msg = Py_NewRef(S_empty);
    if (code_v && PyDict_SetItem(attrs, K_status, code) < 0)
        goto done;
    if (code_v >= 500) {
        status_code = S_ERROR;
        Py_SETREF(msg, Py_NewRef(PyTuple_GET_ITEM(status, 1)));
        code_text = PyObject_Str(code);
        if (code_text == NULL || PyDict_SetItem(attrs, K_error, code_text) < 0)
            goto done;
    }
    if (PyTuple_GET_ITEM(line, 2) == Py_True && scrub_into(t, attrs, &msg) < 0)
        goto done;
    if (add_ends(c, attrs, c->request_tid ? c->tid : NULL) < 0)
        goto done;
    if (c->kind == S_CLIENT && status_code != S_ERROR) {
        /* HTTP semconv: 4xx is an error for the client, not for the server (stitch.py) */
        PyObject *got = PyDict_GetItemWithError(attrs, K_status);
        if (got == NULL && PyErr_Occurred())
            goto done;
        if (got != NULL && PyLong_Check(got)) {
            long v = PyLong_AsLong(got);
            if (v == -1 && PyErr_Occurred())
                goto done;
            if (v >= 400) {
                status_code = S_ERROR;
                PyObject *txt = PyObject_Str(got);
                if (txt == NULL || set_default(attrs, K_error, txt) < 0) {
                    Py_XDECREF(txt);
                    goto done;
                }
                Py_DECREF(txt);
            }
        }
    }
    span = timed_span(t, c, PyTuple_GET_ITEM(line, 0), start, end, status_code, attrs, msg);
done:
    Py_XDECREF(line);
    Py_XDECREF(status);
    Py_XDECREF(attrs);
    Py_XDECREF(msg);
    Py_XDECREF(code_text);
    return span;
}

/* Http1Parser.exchange's shortcut: one whole request, one whole response, lengths that add up. */
static int whole_exchange(const unsigned char *rq, Py_ssize_t rq_n, uint32_t rq_total, struct head *qh,
                          const unsigned char *rs, Py_ssize_t rs_n, uint32_t rs_total, struct head *sh)
{
    if (!head_scan(rq, rq_n, 0, -1, qh) || !qh->request_ok)
        return 0;
    long long length = qh->chunked ? -1 : (qh->length != HEAD_NO_LENGTH ? qh->length : 0);
    if (length < 0 || qh->end + 4 + length != (long long)rq_total)
        return 0;
    if (!head_scan(rs, rs_n, 0, -1, sh) || sh->status < 200)
        return 0;
    long status = sh->status;
    if (status == 204 || status == 304 || (qh->first_len >= 5 && memcmp(rq, "HEAD ", 5) == 0))
        length = 0;
    else if (sh->chunked)
        return 0;
    else if (sh->length != HEAD_NO_LENGTH)
        length = sh->length; /* a BAD_LENGTH is negative */
    else
        return 0; /* until close */
    return length >= 0 && sh->end + 4 + length == (long long)rs_total;
}

/* ---- the table ------------------------------------------------------------------------ */
static PyObject *Table_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"span_type", "request_line", "request_line_long", "status_of", "status_of_long",
                            "scrub", "offset_ns", "redis_shape", "redis_operation", "redis_query_text",
                            "memcached_shape", "sql_summary", "scrub_enabled", NULL};
    PyObject *span_type, *rl, *rll, *so, *sol, *scrub, *rshape, *rop, *rtext, *mshape, *summary, *enabled;
    long long offset;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OOOOOLOOOOOO", names, &PyType_Type, &span_type, &rl, &rll, &so,
                                     &sol, &scrub, &offset, &rshape, &rop, &rtext, &mshape, &summary, &enabled))
        return NULL;
    Table *t = (Table *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->cap = 64;
    t->slots = PyMem_Calloc(t->cap, sizeof(*t->slots));
    /* half of each is used (then emptied); request lines: http1.LINES_CACHED, unique lines fill it */
    t->lines = (struct line_cache){PyMem_Calloc(2048, sizeof(struct line_entry)), 2048, 0, 0};
    t->statuses = (struct line_cache){PyMem_Calloc(512, sizeof(struct line_entry)), 512, 0, 0};
    t->shapes = (struct line_cache){PyMem_Calloc(1024, sizeof(struct line_entry)), 1024, 0, 0};
    if (t->slots == NULL || t->lines.slots == NULL || t->statuses.slots == NULL || t->shapes.slots == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    t->offset_ns = offset;
    t->span_type = Py_NewRef(span_type);
    t->request_line = Py_NewRef(rl);
    t->request_line_long = Py_NewRef(rll);
    t->status_of = Py_NewRef(so);
    t->status_of_long = Py_NewRef(sol);
    t->scrub = Py_NewRef(scrub);
    t->redis_shape = Py_NewRef(rshape);
    t->redis_operation = Py_NewRef(rop);
    t->redis_query_text = Py_NewRef(rtext);
    t->memcached_shape = Py_NewRef(mshape);
    t->sql_summary = Py_NewRef(summary);
    t->scrub_enabled = Py_NewRef(enabled);
    t->rnd_at = sizeof(t->rnd);
    /* a slots dataclass keeps each field in a member slot: set them directly, as its __init__
     * does; anything else (a changed Span) is built by calling the type */
    static const char *fields[11] = {"name", "kind", "start_time_unix_nano", "end_time_unix_nano", "status_code",
                                     "attributes", "resource", "trace_id", "span_id", "parent_span_id",
                                     "status_message"};
    PyTypeObject *st = (PyTypeObject *)span_type;
    PyObject *post_init = PyObject_GetAttrString(span_type, "__post_init__");
    int direct = st->tp_itemsize == 0 && st->tp_dictoffset == 0 && post_init == NULL;
    Py_XDECREF(post_init);
    PyErr_Clear();
    for (int k = 0; k < 11; k++) {
        PyObject *d = PyDict_GetItemString(st->tp_dict, fields[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX)
            direct = 0;
        else
            t->span_offsets[k] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    if (!direct)
        t->span_offsets[0] = -1;
    return (PyObject *)t;
}

static int Table_traverse(Table *t, visitproc visit, void *arg)
{
    for (size_t i = 0; t->slots && i < t->cap; i++) {
        struct conn *c = t->slots[i];
        if (c != NULL) {
            Py_VISIT(c->tracked);
            Py_VISIT(c->conn);
            Py_VISIT(c->resource);
        }
    }
    Py_VISIT(t->span_type);
    Py_VISIT(t->scrub);
    Py_VISIT(t->row_type);
    return 0;
}

static void Table_clear_all(Table *t)
{
    for (size_t i = 0; t->slots && i < t->cap; i++) {
        if (t->slots[i] != NULL) {
            conn_free(t->slots[i]);
            t->slots[i] = NULL;
        }
    }
    t->count = 0;
}

static int Table_clear(Table *t)
{
    Table_clear_all(t);
    Py_CLEAR(t->span_type);
    Py_CLEAR(t->scrub);
    return 0;
}

static void Table_dealloc(Table *t)
{
    PyObject_GC_UnTrack(t);
    Table_clear(t);
    if (t->lines.slots) {
        cache_clear(&t->lines);
        PyMem_Free(t->lines.slots);
    }
    if (t->statuses.slots) {
        cache_clear(&t->statuses);
        PyMem_Free(t->statuses.slots);
    }
    if (t->shapes.slots) {
        cache_clear(&t->shapes);
        PyMem_Free(t->shapes.slots);
    }
    Py_XDECREF(t->row_type);
    Py_XDECREF(t->redis_shape);
    Py_XDECREF(t->redis_operation);
    Py_XDECREF(t->redis_query_text);
    Py_XDECREF(t->memcached_shape);
    Py_XDECREF(t->sql_summary);
    Py_XDECREF(t->scrub_enabled);
    PyMem_Free(t->slots);
    PyMem_Free(t->line.p);
    Py_XDECREF(t->request_line);
    Py_XDECREF(t->request_line_long);
    Py_XDECREF(t->status_of);
    Py_XDECREF(t->status_of_long);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *none_or_ref(PyObject *o) { return o == Py_None ? NULL : Py_NewRef(o); }

/* adopt(conn_id, tracked, conn, pos_egress, pos_ingress, last_seen_ns, request_tid, server,
 *       source_syscall, kind, resource, server_end, client_end, transport, tls_library, epoch, proto,
 *       database) -> bool */
static PyObject *Table_adopt(Table *t, PyObject *args)
{
    unsigned long long id;
    PyObject *tracked, *conn, *p0, *p1, *seen_o, *tid_o, *kind, *resource, *server_end, *client_end, *transport, *tls;
    PyObject *database = Py_None, *system = Py_None, *epoch;
    int server, syscall, proto;
    if (!PyArg_ParseTuple(args, "KOOO!O!O!O!ppUO!OOUOOi|OO", &id, &tracked, &conn, &PyLong_Type, &p0, &PyLong_Type,
                          &p1, &PyLong_Type, &seen_o, &PyLong_Type, &tid_o, &server, &syscall, &kind, &PyDict_Type,
                          &resource, &server_end, &client_end, &transport, &tls, &epoch, &proto, &database, &system))
        return NULL;
    if ((proto != PROTO_HTTP1 && proto != PROTO_REDIS && proto != PROTO_MEMCACHED && proto != PROTO_POSTGRES &&
         proto != PROTO_MYSQL) ||
        (database != Py_None && !PyUnicode_Check(database)) || (system != Py_None && !PyUnicode_Check(system)) ||
        (proto == PROTO_MYSQL) != (system != Py_None))
        Py_RETURN_FALSE;
    uint64_t pos0 = PyLong_AsUnsignedLongLong(p0), pos1 = PyLong_AsUnsignedLongLong(p1);
    long long seen = PyLong_AsLongLong(seen_o);
    unsigned long long tid = PyLong_AsUnsignedLongLong(tid_o);
    if (PyErr_Occurred()) { /* a value past 64 bits (hostile positions or stamps): Python keeps it */
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    if (tid > UINT32_MAX || find(t, id, NULL) != NULL)
        Py_RETURN_FALSE;
    PyObject *ends[2] = {server_end, client_end};
    for (int k = 0; k < 2; k++)
        if (ends[k] != Py_None && (!PyTuple_Check(ends[k]) || PyTuple_GET_SIZE(ends[k]) != 2))
            Py_RETURN_FALSE;
    if (2 * (t->count + 1) > t->cap && grow(t) < 0)
        return PyErr_NoMemory();
    struct conn *c = PyMem_Calloc(1, sizeof(*c));
    if (c == NULL)
        return PyErr_NoMemory();
    c->id = id;
    c->proto = proto;
    c->pos[0] = pos0;
    c->pos[1] = pos1;
    c->last_seen = seen;
    c->request_tid = (uint32_t)tid;
    c->server = server;
    c->source_syscall = syscall;
    c->tracked = Py_NewRef(tracked);
    c->conn = Py_NewRef(conn);
    c->tid = tid ? PyLong_FromUnsignedLongLong(tid) : NULL;
    /* the kind strings compared by identity in build_span */
    c->kind = Py_NewRef(PyUnicode_Compare(kind, S_CLIENT) == 0 ? S_CLIENT : kind);
    c->resource = Py_NewRef(resource);
    if (server_end != Py_None) {
        c->saddr = Py_NewRef(PyTuple_GET_ITEM(server_end, 0));
        c->sport = Py_NewRef(PyTuple_GET_ITEM(server_end, 1));
    }
    if (client_end != Py_None) {
        c->caddr = Py_NewRef(PyTuple_GET_ITEM(client_end, 0));
        c->cport = Py_NewRef(PyTuple_GET_ITEM(client_end, 1));
    }
    c->transport = Py_NewRef(transport);
    c->tls_library = none_or_ref(tls);
    c->database = database != Py_None && PyUnicode_GET_LENGTH(database) ? Py_NewRef(database) : NULL;
    c->system = none_or_ref(system);
    c->epoch = none_or_ref(epoch);
    size_t i = slot_of(id, t->cap);
    while (t->slots[i] != NULL)
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = c;
    t->count++;
    Py_RETURN_TRUE;
}

/* release_all() -> [records held by one connection, in order]: every connection handed back. */
static PyObject *Table_release_all(Table *t, PyObject *unused)
{
    int rc = 0;
    PyObject *held = PyList_New(0);
    if (held == NULL)
        return NULL;
    for (size_t i = 0; i < t->cap; i++) {
        struct conn *c = t->slots[i];
        if (c == NULL)
            continue;
        rc |= write_back(c);
        PyObject *mine = take_held(c, &rc);
        if (mine != NULL && PyList_Append(held, mine) < 0)
            rc = -1;
        Py_XDECREF(mine);
        conn_free(c);
        t->slots[i] = NULL;
        t->released++;
    }
    t->count = 0;
    if (rc < 0) {
        Py_DECREF(held);
        return NULL;
    }
    return held;
}

static inline struct guardian_event header(const char *p)
{
    struct guardian_event ev;
    memcpy(&ev, p, sizeof(ev));
    return ev;
}

/* The exchange of request record rq (its bytes at rq_data) and response record ev (bytes at
 * rs_data) on held connection c, as ConnTracker._exchange -> Pipeline.exchange -> Http1Parser.exchange
 * -> record_to_span make it: 1 with its span appended to out, 0 when Python must make it, -1 on error. */
static int exchange(Table *t, struct conn *c, const struct guardian_event *rq, const unsigned char *rq_data,
                    const struct guardian_event *ev, const unsigned char *rs_data, PyObject *out)
{
    int rd = rq->direction == DIR_EGRESS ? 0 : 1, d = ev->direction == DIR_EGRESS ? 0 : 1;
    uint64_t rend, end;
    long long rts, ts;
    if (rd == d || (rd == 0) != !c->server || (ev->source && c->source_syscall) ||
        (rq->source && c->source_syscall) || (c->pos[rd] && rq->pos != c->pos[rd]) ||
        (c->pos[d] && ev->pos != c->pos[d]) || __builtin_add_overflow(rq->pos, (uint64_t)rq->total_len, &rend) ||
        __builtin_add_overflow(ev->pos, (uint64_t)ev->total_len, &end) || rq->ts_ns > INT64_MAX ||
        ev->ts_ns > INT64_MAX || __builtin_add_overflow((long long)rq->ts_ns, t->offset_ns, &rts) ||
        __builtin_add_overflow((long long)ev->ts_ns, t->offset_ns, &ts))
        return 0;
    struct head qh, sh;
    if (!whole_exchange(rq_data, rq->copied_len, rq->total_len, &qh, rs_data, ev->copied_len, ev->total_len, &sh))
        return 0;
    /* Pipeline.exchange: the request's thread, the connection's last activity */
    if (rq->tid && rq->tid != c->request_tid) {
        PyObject *tid = PyLong_FromUnsignedLong(rq->tid);
        if (tid == NULL)
            return -1;
        Py_XSETREF(c->tid, tid);
        c->request_tid = rq->tid;
    }
    c->last_seen = ts;
    PyObject *span = build_span(t, c, rq_data, &qh, rs_data, &sh, rts, ts);
    if (span == NULL) {
        /* a Python call failed: the record goes to Python, whose own path reports it */
        PyErr_Clear();
        return 0;
    }
    c->pos[rd] = rend;
    c->pos[d] = end;
    int rc = PyList_Append(out, span);
    Py_DECREF(span);
    if (rc < 0)
        return -1;
    t->spans++;
    return 1;
}

/* The first line as Http1Parser._parse_head splits it: a request's third part starts with
 * "HTTP/" (no space in the target); a status line's version and code are what detect() and
 * the split take ("HTTP/1.[01] [1-5]dd" then a space or the CRLF). The whole-message shortcut
 * does not ask this; a message in several chunks takes the general framing, which does. */
static int framing_takes(const unsigned char *h, const struct head *hd, int request)
{
    ssize_t n = hd->first_len;
    if (request) {
        const unsigned char *sp = memchr(h, ' ', n);
        const unsigned char *sp2 = sp ? memchr(sp + 1, ' ', n - (sp + 1 - h)) : NULL;
        return sp2 != NULL && n - (sp2 + 1 - h) >= 5 && memcmp(sp2 + 1, "HTTP/", 5) == 0;
    }
    return n >= 12 && (h[7] == '0' || h[7] == '1') && h[9] >= '1' && h[9] <= '5' &&
           (n == 12 || h[12] == ' ');
}

/* One chunk (the event header at rec[off]) into exchange x of connection c: 1 taken, 0 not (x
 * then means nothing). Mirrors Http1Parser.feed for a connection with nothing else pending. */
static int take_chunk(Table *t, struct conn *c, struct exch *x, PyObject *rec, Py_ssize_t off)
{
    const char *p = PyBytes_AS_STRING(rec) + off;
    struct guardian_event ev = header(p);
    const unsigned char *data = (const unsigned char *)p + HDR;
    int d = ev.direction == DIR_EGRESS ? 0 : 1, request = (d == 0) == !c->server;
    uint64_t end;
    long long ts;
    /* the checks on_event makes of a record on its own (an EV_PAIR's request chunk too) */
    if (ev.proto != PROTO_HTTP1 || ev.transport != TRANSPORT_TCP || (ev.source && c->source_syscall) ||
        (x->expect[d] && ev.pos != x->expect[d]) ||
        __builtin_add_overflow(ev.pos, (uint64_t)ev.total_len, &end) || ev.ts_ns > INT64_MAX ||
        __builtin_add_overflow((long long)ev.ts_ns, t->offset_ns, &ts))
        return 0;
    int head_phase = request ? IDLE : WAIT, body_phase = request ? REQ_BODY : RESP_BODY;
    if (x->phase == head_phase) {
        struct head hd;
        if (!head_scan(data, ev.copied_len, 0, -1, &hd))
            return 0;
        long long length;
        if (request) {
            if (!hd.request_ok || hd.chunked || hd.length == HEAD_BAD_LENGTH)
                return 0;
            length = hd.length == HEAD_NO_LENGTH ? 0 : hd.length;
        } else {
            const unsigned char *rq = (const unsigned char *)PyBytes_AS_STRING(x->req_rec) + x->req_off + HDR;
            if (hd.status < 200)
                return 0;
            if (hd.status == 204 || hd.status == 304 || memcmp(rq, "HEAD ", 5) == 0)
                length = 0;
            else if (hd.chunked || hd.length < 0) /* chunked, a bad length, until close */
                return 0;
            else
                length = hd.length;
        }
        long long body_in = (long long)ev.total_len - (hd.end + 4);
        if (body_in < 0 || body_in > length)
            return 0; /* pipelined, or a head longer than the write (never from the kernel) */
        if (body_in < length && (ev.copied_len > ev.total_len || !framing_takes(data, &hd, request)))
            return 0;
        if (request) {
            x->req_rec = rec;
            x->req_off = off;
            x->req_ts = ts;
        } else {
            x->resp_rec = rec;
            x->resp_off = off;
        }
        x->left = length - body_in;
        x->phase = x->left ? body_phase : (request ? WAIT : COMPLETE);
    } else if (x->phase == body_phase) {
        if (ev.copied_len > ev.total_len || ev.total_len > x->left)
            return 0;
        x->left -= ev.total_len;
        if (x->left == 0)
            x->phase = request ? WAIT : COMPLETE;
    } else
        return 0;
    if (request && ev.tid)
        x->tid = ev.tid;
    x->expect[d] = end;
    x->last_ts = ts;
    if (x->phase == COMPLETE)
        x->end_ts = ts;
    return 1;
}

/* Record `raw` (an EV_DATA chunk, or an EV_PAIR: its request chunk then its response chunk) into
 * connection c's exchange: 1 taken (a span appended to out when it completed one), 0 not (c as it
 * was), -1 on error. */
static int take_record(Table *t, struct conn *c, PyObject *raw, const struct guardian_event *ev, PyObject *out)
{
    struct exch x = c->x;
    if (x.phase == IDLE) {
        memset(&x, 0, sizeof(x));
        x.expect[0] = c->pos[0];
        x.expect[1] = c->pos[1];
    }
    if (ev->kind == EV_PAIR && !take_chunk(t, c, &x, raw, HDR + ev->copied_len))
        return 0;
    if (!take_chunk(t, c, &x, raw, 0))
        return 0;
    if (x.phase != COMPLETE) {
        if (c->nheld == HOLD_MAX)
            return 0;
        c->held[c->nheld++] = Py_NewRef(raw);
        c->x = x;
        return 1;
    }
    const unsigned char *rq = (const unsigned char *)PyBytes_AS_STRING(x.req_rec) + x.req_off;
    const unsigned char *rs = (const unsigned char *)PyBytes_AS_STRING(x.resp_rec) + x.resp_off;
    struct guardian_event rqe = header((const char *)rq), rse = header((const char *)rs);
    struct head qh, sh;
    if (!head_scan(rq + HDR, rqe.copied_len, 0, -1, &qh) || !head_scan(rs + HDR, rse.copied_len, 0, -1, &sh))
        return 0; /* found before: cannot happen */
    uint32_t tid_before = c->request_tid;
    PyObject *tid_obj = NULL;
    if (x.tid && x.tid != c->request_tid) {
        if ((tid_obj = PyLong_FromUnsignedLong(x.tid)) == NULL)
            return -1;
        Py_XSETREF(c->tid, tid_obj);
        c->request_tid = x.tid;
    }
    PyObject *span = build_span(t, c, rq + HDR, &qh, rs + HDR, &sh, x.req_ts, x.end_ts);
    if (span == NULL) {
        PyErr_Clear(); /* a Python call failed: Python's own path takes the records and reports it */
        c->request_tid = tid_before;
        return 0;
    }
    int rc = PyList_Append(out, span);
    Py_DECREF(span);
    if (rc < 0)
        return -1;
    t->spans++;
    c->pos[0] = x.expect[0];
    c->pos[1] = x.expect[1];
    c->last_seen = x.last_ts;
    for (int k = 0; k < c->nheld; k++)
        Py_DECREF(c->held[k]);
    c->nheld = 0;
    c->x.phase = IDLE;
    return 1;
}

/* ---- FIFO protocols: commands wait in order for their replies ------------------------- */
static int all_in(const unsigned char *s, Py_ssize_t n, unsigned char lo, unsigned char hi)
{
    for (Py_ssize_t k = 0; k < n; k++)
        if (s[k] < lo || s[k] > hi)
            return 0;
    return 1;
}

static PyObject *ascii(const char *s, Py_ssize_t n)
{
    PyObject *u = PyUnicode_New(n, 127);
    if (u != NULL)
        memcpy(PyUnicode_1BYTE_DATA(u), s, n);
    return u;
}

static int queue_push(struct conn *c, struct rcmd *r)
{
    if (c->qlen == c->qcap) {
        size_t cap = c->qcap ? 2 * c->qcap : 16;
        struct rcmd *q = PyMem_Calloc(cap, sizeof(*q));
        if (q == NULL)
            return -1;
        for (size_t k = 0; k < c->qlen; k++)
            q[k] = c->q[(c->qhead + k) % c->qcap];
        PyMem_Free(c->q);
        c->q = q;
        c->qcap = cap;
        c->qhead = 0;
    }
    c->q[(c->qhead + c->qlen++) % c->qcap] = *r;
    return 0;
}

/* The oldest waiting command, taken off c's queue (the caller checked one waits). */
static struct rcmd *queue_pop(struct conn *c)
{
    struct rcmd *r = &c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    return r;
}

static int append_span(PyObject *spans, PyObject *span)
{
    if (span == NULL) {
        PyErr_Clear(); /* Python's path makes it and reports what failed */
        return 0;
    }
    int bad = PyList_Append(spans, span);
    Py_DECREF(span);
    return bad ? -1 : 1;
}

typedef int (*chunk_fn)(Table *t, struct conn *c, const unsigned char *b, Py_ssize_t n, long long ts,
                        PyObject *tid, PyObject *spans);

/* Record `raw` (an EV_DATA chunk, or an EV_PAIR: its request chunk then its response chunk) on
 * connection c of a FIFO protocol (Redis, Memcached), as on_event / _exchange -> Pipeline ->
 * parser.feed -> record_to_span take it when every chunk holds whole messages: `requests` and
 * `replies` read a chunk of each side. 1 taken (spans appended to out), 0 not (the caller then
 * hands c back, whatever this left in it), -1 on error. The records since c last had nothing
 * waiting stay held: Python replays them on a hand-back (their spans, made here already,
 * dropped), which rebuilds its parser's state exactly. */
static int take_fifo(Table *t, struct conn *c, PyObject *raw, const struct guardian_event *first, PyObject *out,
                     chunk_fn requests, chunk_fn replies)
{
    Py_ssize_t offs[2] = {HDR + first->copied_len, 0};
    int nchunks = first->kind == EV_PAIR ? 2 : 1;
    uint64_t pos[2] = {c->pos[0], c->pos[1]};
    long long seen = c->last_seen;
    uint32_t tid = c->request_tid;
    PyObject *tid_obj = c->tid ? Py_NewRef(c->tid) : NULL, *spans = PyList_New(0);
    int rc = spans == NULL ? -1 : 0;
    for (int k = 2 - nchunks; k < 2 && spans != NULL; k++) {
        const char *p = PyBytes_AS_STRING(raw) + offs[k];
        struct guardian_event ev = header(p);
        int d = ev.direction == DIR_EGRESS ? 0 : 1, request = (d == 0) == !c->server;
        uint64_t end;
        long long ts;
        /* whole messages only: a chunk the capture cut, a gap, a TLS upgrade go to Python */
        if (ev.proto != c->proto || ev.transport != TRANSPORT_TCP || (ev.source && c->source_syscall) ||
            ev.copied_len != ev.total_len || (pos[d] && ev.pos != pos[d]) ||
            __builtin_add_overflow(ev.pos, (uint64_t)ev.total_len, &end) || ev.ts_ns > INT64_MAX ||
            __builtin_add_overflow((long long)ev.ts_ns, t->offset_ns, &ts))
            goto done;
        if (request && ev.tid && ev.tid != tid) {
            tid = ev.tid;
            Py_XSETREF(tid_obj, PyLong_FromUnsignedLong(tid));
            if (tid_obj == NULL) {
                rc = -1;
                goto done;
            }
        }
        int got = (request ? requests : replies)(t, c, (const unsigned char *)p + HDR, ev.copied_len, ts,
                                                 tid ? tid_obj : NULL, spans);
        if (got <= 0) {
            rc = got;
            goto done;
        }
        pos[d] = end;
        seen = ts;
    }
    /* waiting: commands for their replies, or (MySQL) a header for its payload */
    int waiting = c->qlen || c->my_hdr_len;
    if (spans == NULL || (waiting && c->nheld == HOLD_MAX))
        goto done;
    if (PyList_SetSlice(out, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, spans) < 0) {
        rc = -1;
        goto done;
    }
    t->spans += PyList_GET_SIZE(spans);
    c->pos[0] = pos[0];
    c->pos[1] = pos[1];
    c->last_seen = seen;
    if (tid != c->request_tid) {
        c->request_tid = tid;
        Py_XSETREF(c->tid, Py_NewRef(tid_obj));
    }
    if (waiting)
        c->held[c->nheld++] = Py_NewRef(raw);
    else { /* nothing waits: Python's parser, idle, stands for everything taken so far */
        for (int k = 0; k < c->nheld; k++)
            Py_DECREF(c->held[k]);
        c->nheld = 0;
    }
    rc = 1;
done:
    Py_XDECREF(tid_obj);
    Py_XDECREF(spans);
    return rc;
}

/* Shared by the two SQL protocols (fastpath_postgres.h, fastpath_mysql.h). */

/* scrub.record would leave a span of this query as it is (no status message): scrub.sql changes
 * only a text with "assword", "ASSWORD" or, in any case, "dentified"; here an ASCII text without
 * either word in any case. */
static int sql_scrub_skips(PyObject *query)
{
    if (!PyUnicode_IS_ASCII(query))
        return 0;
    const unsigned char *s = PyUnicode_1BYTE_DATA(query);
    Py_ssize_t n = PyUnicode_GET_LENGTH(query);
    for (Py_ssize_t i = 0; i + 7 <= n; i++) {
        unsigned char ch = s[i] | 32;
        if ((ch == 'a' && i + 7 <= n && strncasecmp((const char *)s + i, "assword", 7) == 0) ||
            (ch == 'd' && i + 9 <= n && strncasecmp((const char *)s + i, "dentified", 9) == 0))
            return 0;
    }
    return 1;
}

/* (operation, collection) of a query: in C for ASCII text, else capture.protocols.sql's answer;
 * NULL (an error set or not) when it is not such a pair. */
static PyObject *sql_summary_of(Table *t, PyObject *query)
{
    PyObject *summary = sql_summary_ascii(query);
    if (summary == NULL && !PyErr_Occurred())
        summary = PyObject_CallOneArg(t->sql_summary, query);
    if (summary != NULL && (!PyTuple_Check(summary) || PyTuple_GET_SIZE(summary) != 2))
        Py_CLEAR(summary);
    return summary;
}

/* A SQL span's end: scrubbed unless its message is empty and its text cannot hold a credential
 * (query NULL: no text, scrubbed), the connection's ends, its times. */
static PyObject *sql_span(Table *t, struct conn *c, PyObject *query, PyObject *name, long long start,
                          long long end, PyObject *status, PyObject *attrs, PyObject **msg, PyObject *tid)
{
    if ((PyUnicode_GET_LENGTH(*msg) || query == NULL || !sql_scrub_skips(query)) && scrub_into(t, attrs, msg) < 0)
        return NULL;
    return ends_span(t, c, name, start, end, status, attrs, *msg, tid);
}

#include "fastpath_redis.h"
#include "fastpath_memcached.h"
#include "fastpath_postgres.h"
#include "fastpath_mysql.h"

/* run(records, start, out) -> (index, verdict, held): takes records[start:] while they are
 * chunks of held connections' HTTP/1 exchanges (EV_PAIR records, or EV_DATA chunks), appending
 * the spans they complete to `out`; stops at the first it does not take: PYTHON (not a held
 * connection's), RELEASED (a held connection's: handed back first, with `held`, the records of
 * its unfinished exchange that Python must take before this one), UNKNOWN (an HTTP/1 record of
 * a connection not held: capture/fastpath.py may adopt it and call again from the same index),
 * or DONE. */
static PyObject *Table_run(Table *t, PyObject *args)
{
    PyObject *records, *out;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!nO!", &PyList_Type, &records, &i, &PyList_Type, &out))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records);
    int verdict = DONE;
    size_t at = 0;
    if (i < 0)
        i = 0;
    for (; i < n; i++) {
        PyObject *raw = PyList_GET_ITEM(records, i);
        if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) < HDR) {
            verdict = PYTHON;
            break;
        }
        const char *p = PyBytes_AS_STRING(raw);
        Py_ssize_t len = PyBytes_GET_SIZE(raw);
        struct guardian_event ev = header(p);
        struct conn *c = find(t, ev.conn_id, &at);
        verdict = c != NULL ? RELEASED : PYTHON;
        int proto = c != NULL ? c->proto : ev.proto;
        if (ev.proto != proto ||
            (proto != PROTO_HTTP1 && proto != PROTO_REDIS && proto != PROTO_MEMCACHED && proto != PROTO_POSTGRES &&
             proto != PROTO_MYSQL) ||
            (Py_ssize_t)ev.copied_len > len - HDR)
            break;
        int took;
        if (ev.kind == EV_PAIR) {
            /* the response chunk's bytes, then its request chunk's record, all inside the record */
            if ((Py_ssize_t)ev.copied_len > len - 2 * HDR)
                break;
            const char *req = p + HDR + ev.copied_len;
            struct guardian_event rq = header(req);
            /* a request chunk that is not a data record of this connection (never from the
             * kernel): Python's way */
            if ((Py_ssize_t)rq.copied_len > len - 2 * HDR - (Py_ssize_t)ev.copied_len || rq.conn_id != ev.conn_id ||
                rq.kind != EV_DATA)
                break;
            if (c == NULL) {
                verdict = UNKNOWN;
                break;
            }
            if (proto == PROTO_REDIS)
                took = take_redis(t, c, raw, &ev, out);
            else if (proto == PROTO_MEMCACHED)
                took = take_memcached(t, c, raw, &ev, out);
            else if (proto == PROTO_POSTGRES)
                took = take_postgres(t, c, raw, &ev, out);
            else if (proto == PROTO_MYSQL)
                took = take_mysql(t, c, raw, &ev, out);
            else if ((took = c->x.phase == IDLE ? exchange(t, c, &rq, (const unsigned char *)req + HDR, &ev,
                                                 (const unsigned char *)p + HDR, out) : 0) == 0)
                took = take_record(t, c, raw, &ev, out);
        } else if (ev.kind == EV_DATA) {
            if (c == NULL) {
                verdict = UNKNOWN;
                break;
            }
            /* on_event's case that the exchange path does not have: a UDP datagram */
            if (ev.transport != TRANSPORT_TCP)
                break;
            took = proto == PROTO_REDIS ? take_redis(t, c, raw, &ev, out)
                   : proto == PROTO_MEMCACHED ? take_memcached(t, c, raw, &ev, out)
                   : proto == PROTO_POSTGRES ? take_postgres(t, c, raw, &ev, out)
                   : proto == PROTO_MYSQL ? take_mysql(t, c, raw, &ev, out) : take_record(t, c, raw, &ev, out);
        } else
            break;
        if (took < 0)
            return NULL;
        if (took == 0)
            break;
    }
    PyObject *held = NULL;
    if (i >= n)
        verdict = DONE;
    else {
        t->handed++;
        if (verdict == RELEASED && release_at(t, at, &held) < 0) {
            Py_XDECREF(held);
            return NULL;
        }
        /* an EV_PAIR whose request part names another connection (never from the kernel):
         * on_event takes that part as that connection's, so it is handed back too */
        PyObject *raw = PyList_GET_ITEM(records, i);
        if (PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) >= 2 * HDR) {
            struct guardian_event ev = header(PyBytes_AS_STRING(raw)), rq;
            if (ev.kind == EV_PAIR && (Py_ssize_t)ev.copied_len <= PyBytes_GET_SIZE(raw) - 2 * HDR) {
                rq = header(PyBytes_AS_STRING(raw) + HDR + ev.copied_len);
                PyObject *more = NULL;
                if (rq.conn_id != ev.conn_id && find(t, rq.conn_id, &at) != NULL) {
                    int rc = release_at(t, at, &more);
                    if (more != NULL) {
                        if (held == NULL)
                            held = Py_NewRef(more);
                        else if (PyList_SetSlice(held, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, more) < 0)
                            rc = -1;
                        Py_DECREF(more);
                    }
                    if (rc < 0) {
                        Py_XDECREF(held);
                        return NULL;
                    }
                    if (verdict != RELEASED)
                        verdict = RELEASED;
                }
            }
        }
    }
    PyObject *res = Py_BuildValue("(niO)", i, verdict, held ? held : Py_None);
    Py_XDECREF(held);
    return res;
}

static PyObject *Table_counts(Table *t, PyObject *unused)
{
    Py_ssize_t waiting = 0;
    for (size_t i = 0; i < t->cap; i++)
        waiting += t->slots[i] != NULL && t->slots[i]->nheld > 0;
    return Py_BuildValue("{sKsKsKsnsnsnsKsnsK}", "spans", t->spans, "handed_over", t->handed, "released", t->released,
                         "connections", (Py_ssize_t)t->count, "exchanges_waiting", waiting,
                         "line_cache.entries", (Py_ssize_t)t->lines.used, "line_cache.evicted", t->lines.evicted,
                         "shape_cache.entries", (Py_ssize_t)t->shapes.used, "shape_cache.evicted", t->shapes.evicted);
}

/* seed_ids(seed): ids drawn from a fixed sequence from now on (splitmix64 of seed), not getrandom:
 * two tables fed the same records then give the same ids (differential tests). */
static PyObject *Table_seed_ids(Table *t, PyObject *arg)
{
    unsigned long long x = PyLong_AsUnsignedLongLongMask(arg);
    if (x == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    t->seed = x;
    t->seeded = 1;
    t->rnd_at = sizeof(t->rnd); /* drawn anew, from the seed */
    Py_RETURN_NONE;
}

static Py_ssize_t Table_len(Table *t) { return (Py_ssize_t)t->count; }

static int Table_contains(Table *t, PyObject *key)
{
    unsigned long long id = PyLong_AsUnsignedLongLong(key);
    if (id == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return find(t, id, NULL) != NULL;
}

/* rows_as(Row): capture.export._otlp_wire.Row, whose fields are slots: HTTP/1 exchanges written as
 * its rows (http_row) from now on; None: as Spans again. False: not a type with its fields in slots. */
static PyObject *Table_rows_as(Table *t, PyObject *type)
{
    static const char *const names[15] = {"name", "kind", "start_time_unix_nano", "end_time_unix_nano",
                                          "status_code", "status_message", "attributes", "resource", "trace_id",
                                          "span_id", "parent_span_id", "attrs_json", "key", "nat", "peer"};
    if (type == Py_None) {
        Py_CLEAR(t->row_type);
        Py_RETURN_TRUE;
    }
    if (!PyType_Check(type) || ((PyTypeObject *)type)->tp_dict == NULL)
        Py_RETURN_FALSE;
    for (int k = 0; k < 15; k++) {
        PyObject *d = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, names[k]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT)
            Py_RETURN_FALSE;
        t->row_offsets[k] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    Py_XSETREF(t->row_type, Py_NewRef(type));
    Py_RETURN_TRUE;
}

static PyMethodDef Table_methods[] = {
    {"rows_as", (PyCFunction)Table_rows_as, METH_O,
     "rows_as(Row or None): HTTP/1 exchanges made as capture.rows' Rows (the same as to_rows of the Span)."},
    {"adopt", (PyCFunction)Table_adopt, METH_VARARGS, "Hold a connection: its exchanges are made here."},
    {"release_all", (PyCFunction)Table_release_all, METH_NOARGS, "Hand every held connection back."},
    {"run", (PyCFunction)Table_run, METH_VARARGS, "run(records, start, out) -> (index, verdict)."},
    {"counts", (PyCFunction)Table_counts, METH_NOARGS, "Spans made, records handed over, releases."},
    {"seed_ids", (PyCFunction)Table_seed_ids, METH_O, "seed_ids(seed): ids from a fixed sequence (tests)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Table_members[] = {
    {"as_lines", T_BOOL, offsetof(Table, as_lines), 0,
     "Spans made here are appended to run()'s out as their `--json` lines (bytes), not as Spans."},
    {NULL},
};

static PySequenceMethods Table_seq = {.sq_length = (lenfunc)Table_len, .sq_contains = (objobjproc)Table_contains};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "capture._fastpath.Table",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Table_new,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_traverse = (traverseproc)Table_traverse,
    .tp_clear = (inquiry)Table_clear,
    .tp_methods = Table_methods,
    .tp_members = Table_members,
    .tp_as_sequence = &Table_seq,
    .tp_doc = "Connections whose HTTP/1, Redis, Memcached, PostgreSQL and MySQL exchanges become spans in C.",
};

/* sql_summary(query) -> (operation, collection), or None where Python's answer is needed (not ASCII) */
static PyObject *module_sql_summary(PyObject *self, PyObject *query)
{
    if (!PyUnicode_Check(query)) {
        PyErr_SetString(PyExc_TypeError, "sql_summary takes a str");
        return NULL;
    }
    PyObject *out = sql_summary_ascii(query);
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

static PyMethodDef module_methods[] = {
    {"sql_summary", module_sql_summary, METH_O, "capture.protocols.sql.sql_summary of an ASCII statement, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._fastpath",
                                    "HTTP/1, Redis, Memcached, PostgreSQL and MySQL exchanges to spans, in C.", -1,
                                    module_methods};

#define INTERN(var, text)                                  \
    do {                                                   \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                   \
    } while (0)

PyMODINIT_FUNC PyInit__fastpath(void)
{
    init_escapes();
    init_hex_pairs();
    INTERN(S_pos, "pos");
    INTERN(S_last_seen, "last_seen_ns");
    INTERN(S_request_tid, "request_tid");
    INTERN(S_UNSET, "UNSET");
    INTERN(S_t, "t");
    INTERN(S_ERROR, "ERROR");
    INTERN(S_empty, "");
    INTERN(S_CLIENT, "CLIENT");
    INTERN(K_host, "http.request.header.host");
    INTERN(K_agent, "user_agent.original");
    INTERN(K_parent, "http.request.header.traceparent");
    INTERN(K_status, "http.response.status_code");
    INTERN(K_error, "error.type");
    INTERN(K_saddr, "server.address");
    INTERN(K_sport, "server.port");
    INTERN(K_caddr, "client.address");
    INTERN(K_cport, "client.port");
    INTERN(K_transport, "network.transport");
    INTERN(K_tid, "thread.id");
    INTERN(K_tls, "tls.library");
    INTERN(K_epoch, "guardian.connection.epoch");
    INTERN(K_url_full, "url.full");
    INTERN(K_url_path, "url.path");
    INTERN(K_url_query, "url.query");
    INTERN(K_db_system, "db.system");
    INTERN(S_redis, "redis");
    INTERN(S_memcached, "memcached");
    INTERN(S_postgresql, "postgresql");
    INTERN(S_QUERY, "QUERY");
    INTERN(S_PING, "PING");
    INTERN(K_mysql_command, "mysql.command");
    INTERN(K_sqlstate, "db.mysql.sqlstate");
    INTERN(K_db_namespace, "db.namespace");
    INTERN(K_db_collection, "db.collection.name");
    INTERN(S_noreply, "noreply");
    INTERN(S_END, "END");
    INTERN(K_mc_hit, "memcached.hit");
    INTERN(K_rows, "db.response.returned_rows");
    INTERN(S_send, "send");
    INTERN(S_space, " ");
    INTERN(K_db_operation, "db.operation.name");
    INTERN(K_db_query, "db.query.text");
    INTERN(K_db_status, "db.response.status_code");
    INTERN(K_msg_system, "messaging.system");
    INTERN(K_msg_dest, "messaging.destination.name");
    INTERN(K_msg_op, "messaging.operation.type");
    if (PyType_Ready(&TableType) < 0 || pthread_atfork(NULL, NULL, after_fork_in_child) != 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Table", (PyObject *)&TableType) < 0 ||
        PyModule_AddIntConstant(m, "DONE", DONE) < 0 || PyModule_AddIntConstant(m, "PYTHON", PYTHON) < 0 ||
        PyModule_AddIntConstant(m, "RELEASED", RELEASED) < 0 || PyModule_AddIntConstant(m, "UNKNOWN", UNKNOWN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
