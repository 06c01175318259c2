/* capture.traces._link: link() of capture/traces/linker.py in C (the agent's linker, run over the
 * band of each release: most of the agent's CPU per span in Python), and StreamLinker._release.
 *
 * linker.link_python is the specification: the same rules in the same order, the same ties (a
 * CLIENT's candidates by fit then span id, best fit first over all clients by fit, client id,
 * server id; servers and clients of a process swept by start, earlier span first on equal times),
 * the same parents, trace ids and counts. What it reads of a span: kind, times, ids and parent by
 * attribute; a compact row's (capture.rows) connection key, thread and traceparent from its `key`
 * tuple, a Span's from the Python helpers passed in; the process from its resource dict. It gives
 * up (returns None: the caller runs the Python) where the specification's dict semantics would
 * differ from an index's: two spans with one span id, a kind or a time of an unexpected type.
 * tests/capture/traces/test_link_c.py compares the two. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OTHER = 0, SERVER = 1, CLIENT = 2 };

static PyObject *A_kind, *A_start, *A_end, *A_span_id, *A_parent, *A_trace_id, *A_attributes, *A_key,
    *A_resource, *K_host, *K_pid, *K_traceparent;

/* ---- a span's fields: from their slots where its type has them (Span, Row), else by name ---- */
enum { F_KIND, F_START, F_END, F_SPAN_ID, F_PARENT, F_TRACE, F_ATTRS, F_KEY, F_RESOURCE, NF };
static PyObject **const FIELD_NAMES[NF] = {&A_kind, &A_start, &A_end, &A_span_id, &A_parent, &A_trace_id,
                                           &A_attributes, &A_key, &A_resource};

typedef struct {
    PyTypeObject *type;
    Py_ssize_t off[NF]; /* -1: by name */
    char writable[NF];
} Layout;

static Layout layouts[4]; /* the types seen, each with a reference held */

static const Layout *layout_of(PyTypeObject *t)
{
    size_t k = 0;
    for (; k < sizeof(layouts) / sizeof(*layouts) && layouts[k].type != NULL; k++)
        if (layouts[k].type == t)
            return &layouts[k];
    if (k == sizeof(layouts) / sizeof(*layouts))
        return NULL; /* too many kinds of span: by name */
    Layout *L = &layouts[k];
    for (int f = 0; f < NF; f++) {
        PyObject *d = t->tp_dict ? PyDict_GetItemWithError(t->tp_dict, *FIELD_NAMES[f]) : NULL;
        if (d == NULL && PyErr_Occurred())
            PyErr_Clear();
        PyMemberDef *m = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)d)->d_member : NULL;
        int ok = m != NULL && (m->type == T_OBJECT || m->type == T_OBJECT_EX);
        L->off[f] = ok ? m->offset : -1;
        L->writable[f] = ok && !(m->flags & READONLY);
    }
    L->type = (PyTypeObject *)Py_NewRef(t);
    return L;
}

/* the field's value (new ref); an empty slot raises as getattr does */
static PyObject *field(PyObject *o, const Layout *L, int f)
{
    if (L != NULL && L->off[f] >= 0) {
        PyObject *v = *(PyObject **)((char *)o + L->off[f]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, *FIELD_NAMES[f]);
}

static int set_field(PyObject *o, int f, PyObject *v)
{
    const Layout *L = layout_of(Py_TYPE(o));
    if (L != NULL && L->off[f] >= 0 && L->writable[f]) {
        Py_XSETREF(*(PyObject **)((char *)o + L->off[f]), Py_NewRef(v));
        return 0;
    }
    return PyObject_SetAttr(o, *FIELD_NAMES[f], v);
}

enum { PROC_CACHE_BITS = 6, PROC_CACHE = 1 << PROC_CACHE_BITS };

typedef struct {
    Py_ssize_t n;
    PyObject **items;  /* borrowed from the list */
    PyObject **sid;    /* new refs */
    PyObject **par;    /* new refs or NULL: the parent span id (the specification's `parent` dict) */
    PyObject **conn;   /* new refs: conn_key(s) (Py_None: none) */
    PyObject **thread; /* new refs: _thread(s) */
    PyObject **tp;     /* new refs: the traceparent value (Py_None: none) */
    PyObject **proc;   /* new refs: _process(s), SERVER/CLIENT kinds only */
    int64_t *start, *end;
    Py_ssize_t *ids;  /* open addressing over span ids: index + 1, 0 empty */
    Py_hash_t *hash;  /* each span id's hash */
    size_t ids_cap;
    char *kind, *frozen, *open;
    /* the process of each resource dict seen lately (by identity; the spans hold the dicts): the spans
     * of a few processes' connections interleave (a client and its server), one tuple per resource */
    PyObject *res_seen[PROC_CACHE], *proc_of[PROC_CACHE];
} Spans;

static void spans_free(Spans *s)
{
    PyObject **arrays[] = {s->sid, s->par, s->conn, s->thread, s->tp, s->proc};
    for (size_t a = 0; a < sizeof(arrays) / sizeof(*arrays); a++) {
        if (arrays[a] == NULL)
            continue;
        for (Py_ssize_t i = 0; i < s->n; i++)
            Py_XDECREF(arrays[a][i]);
        PyMem_Free(arrays[a]);
    }
    for (int k = 0; k < PROC_CACHE; k++)
        Py_XDECREF(s->proc_of[k]);
    PyMem_Free(s->start);
    PyMem_Free(s->end);
    PyMem_Free(s->ids);
    PyMem_Free(s->hash);
    PyMem_Free(s->kind);
    PyMem_Free(s->frozen);
    PyMem_Free(s->open);
}

/* ---- a released span as the context holds it: its link facts, not its row ----------------------
 * StreamLinker keeps released spans for a window as frozen context; the whole row (name, attribute
 * text, status) is the store's by then. A Held keeps what linking reads of a frozen span: kind,
 * times, ids, parent, trace id, the connection facts (`key`, as a row's) and the resource. Not
 * tracked by the collector: it refers only to strings, ints, tuples and a resource dict. */
typedef struct {
    PyObject_HEAD
    PyObject *kind, *span_id, *parent, *trace_id, *key, *resource;
    long long start, end; /* (not ints: a Held outlives its row, and two ints were 64 bytes) */
} Held;

static PyMemberDef held_members[] = {
    {"kind", T_OBJECT, offsetof(Held, kind), READONLY, NULL},
    {"start_time_unix_nano", T_LONGLONG, offsetof(Held, start), READONLY, NULL},
    {"end_time_unix_nano", T_LONGLONG, offsetof(Held, end), READONLY, NULL},
    {"span_id", T_OBJECT, offsetof(Held, span_id), READONLY, NULL},
    {"parent_span_id", T_OBJECT, offsetof(Held, parent), READONLY, NULL},
    {"trace_id", T_OBJECT, offsetof(Held, trace_id), READONLY, NULL},
    {"key", T_OBJECT, offsetof(Held, key), READONLY, NULL},
    {"resource", T_OBJECT, offsetof(Held, resource), READONLY, NULL},
    {NULL},
};

static void held_dealloc(Held *h)
{
    Py_XDECREF(h->kind);
    Py_XDECREF(h->span_id);
    Py_XDECREF(h->parent);
    Py_XDECREF(h->trace_id);
    Py_XDECREF(h->key);
    Py_XDECREF(h->resource);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *held_attributes(PyObject *self, void *closure)
{
    Py_RETURN_NONE; /* as a compact row's: the connection facts are in `key` */
}

static PyGetSetDef held_getset[] = {{"attributes", held_attributes, NULL, NULL, NULL}, {NULL}};

static PyTypeObject HeldType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "capture.traces._link.Held",
    .tp_basicsize = sizeof(Held),
    .tp_dealloc = (destructor)held_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A released span's link facts (StreamLinker's context): kind, times, ids, key, resource.",
    .tp_members = held_members,
    .tp_getset = held_getset,
};

/* The Held of span i of a run (its fields as the run left them): a row's key as it is, a Span's made
 * of what the run read (connection, thread, traceparent; None where its kind reads none). */
static PyObject *held_of(const Spans *s, Py_ssize_t i)
{
    PyObject *o = s->items[i];
    const Layout *L = layout_of(Py_TYPE(o));
    Held *h = PyObject_New(Held, &HeldType);
    if (h == NULL)
        return NULL;
    h->kind = h->parent = h->trace_id = h->key = h->resource = NULL;
    h->span_id = Py_NewRef(s->sid[i]);
    h->start = s->start[i];
    h->end = s->end[i];
    PyObject *attrs = field(o, L, F_ATTRS);
    if (attrs == NULL)
        goto fail;
    if (attrs == Py_None)
        h->key = field(o, L, F_KEY);
    else
        h->key = PyTuple_Pack(3, s->conn[i] ? s->conn[i] : Py_None, s->thread[i] ? s->thread[i] : Py_None,
                              s->tp[i] ? s->tp[i] : Py_None);
    Py_DECREF(attrs);
    if (h->key == NULL || (h->kind = field(o, L, F_KIND)) == NULL || (h->parent = field(o, L, F_PARENT)) == NULL ||
        (h->trace_id = field(o, L, F_TRACE)) == NULL || (h->resource = field(o, L, F_RESOURCE)) == NULL)
        goto fail;
    return (PyObject *)h;
fail:
    Py_DECREF(h);
    return NULL;
}

/* -1: error; 0: cannot say (the caller falls back); 1: read. */
static int kind_of(PyObject *k, char *out)
{
    if (!PyUnicode_Check(k))
        return 0;
    if (PyUnicode_CompareWithASCIIString(k, "SERVER") == 0 || PyUnicode_CompareWithASCIIString(k, "CONSUMER") == 0)
        *out = SERVER;
    else if (PyUnicode_CompareWithASCIIString(k, "CLIENT") == 0 || PyUnicode_CompareWithASCIIString(k, "PRODUCER") == 0)
        *out = CLIENT;
    else
        *out = OTHER;
    return 1;
}

static int int64_of(PyObject *o, int64_t *out)
{
    if (!PyLong_Check(o))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v > INT64_MAX / 4 || v < INT64_MIN / 4) /* fits and sums of fits stay in range */
        return 0;
    *out = v;
    return 1;
}

static PyObject *dict_get(PyObject *d, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    return Py_NewRef(v);
}

/* Two exact str equal? (span ids: mostly ASCII of one length) */
static int same_str(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (PyUnicode_IS_COMPACT_ASCII(a) && PyUnicode_IS_COMPACT_ASCII(b))
        return PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) &&
               memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), PyUnicode_GET_LENGTH(a)) == 0;
    return PyUnicode_Compare(a, b) == 0;
}

/* a < b as Python orders str (by code point); span ids are exact str */
static int str_lt(PyObject *a, PyObject *b)
{
    if (a == b)
        return 0;
    if (PyUnicode_IS_COMPACT_ASCII(a) && PyUnicode_IS_COMPACT_ASCII(b)) {
        Py_ssize_t na = PyUnicode_GET_LENGTH(a), nb = PyUnicode_GET_LENGTH(b);
        int c = memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), na < nb ? na : nb);
        return c < 0 || (c == 0 && na < nb);
    }
    return PyUnicode_Compare(a, b) < 0;
}

/* What link() reads of every span, once. -1 error, 0 fall back, 1 done. */
/* A span's start or end as int64 (rc as int64_of). */
static int time_of(PyObject *o, int f, int64_t *out)
{
    if (Py_IS_TYPE(o, &HeldType)) { /* (its times are not objects: read as they are) */
        *out = f == F_START ? ((Held *)o)->start : ((Held *)o)->end;
        return 1;
    }
    PyObject *v = field(o, layout_of(Py_TYPE(o)), f);
    if (v == NULL)
        return -1;
    int rc = int64_of(v, out);
    Py_DECREF(v);
    return rc;
}

static int read_spans(Spans *s, PyObject *list, PyObject *frozen, Py_ssize_t frozen_first, PyObject *fn_conn,
                      PyObject *fn_thread, PyObject *fn_process)
{
    Py_ssize_t n = s->n = PyList_GET_SIZE(list);
    Py_ssize_t m = n ? n : 1;
    s->items = PySequence_Fast_ITEMS(list);
    s->sid = PyMem_Calloc(m, sizeof(PyObject *));
    s->par = PyMem_Calloc(m, sizeof(PyObject *));
    s->conn = PyMem_Calloc(m, sizeof(PyObject *));
    s->thread = PyMem_Calloc(m, sizeof(PyObject *));
    s->tp = PyMem_Calloc(m, sizeof(PyObject *));
    s->proc = PyMem_Calloc(m, sizeof(PyObject *));
    s->start = PyMem_Calloc(m, sizeof(int64_t));
    s->end = PyMem_Calloc(m, sizeof(int64_t));
    s->hash = PyMem_Calloc(m, sizeof(Py_hash_t));
    s->kind = PyMem_Calloc(m, 1);
    s->frozen = PyMem_Calloc(m, 1);
    s->open = PyMem_Calloc(m, 1);
    if (!s->sid || !s->par || !s->conn || !s->thread || !s->tp || !s->proc || !s->start || !s->end || !s->hash ||
        !s->kind || !s->frozen || !s->open) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = s->items[i], *v;
        const Layout *L = layout_of(Py_TYPE(o));
        int rc;
        if ((v = field(o, L, F_SPAN_ID)) == NULL)
            return -1;
        s->sid[i] = v;
        if (!PyUnicode_CheckExact(v))
            return 0;
        if ((v = field(o, L, F_KIND)) == NULL)
            return -1;
        rc = kind_of(v, &s->kind[i]);
        Py_DECREF(v);
        if (rc <= 0)
            return rc;
        if ((rc = time_of(o, F_START, &s->start[i])) <= 0 || (rc = time_of(o, F_END, &s->end[i])) <= 0)
            return rc;
        if ((v = field(o, L, F_PARENT)) == NULL)
            return -1;
        rc = PyObject_IsTrue(v);
        if (rc < 0) {
            Py_DECREF(v);
            return -1;
        }
        if (rc)
            s->par[i] = v;
        else
            Py_DECREF(v);
        rc = frozen_first >= 0 ? i < frozen_first
             : frozen == NULL ? 0 : PyAnySet_Check(frozen) ? PySet_Contains(frozen, s->sid[i])
                                                            : PySequence_Contains(frozen, s->sid[i]);
        if (rc < 0)
            return -1;
        s->frozen[i] = (char)rc;
        s->open[i] = !rc && s->par[i] == NULL;
        /* connection, thread, traceparent: a row's from its key, a Span's from the helpers (only
         * the traceparent is read of other kinds: rule 4's) */
        PyObject *attrs = field(o, L, F_ATTRS);
        if (attrs == NULL)
            return -1;
        if (attrs == Py_None) {
            Py_DECREF(attrs);
            PyObject *key = field(o, L, F_KEY);
            if (key == NULL)
                return -1;
            if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) < 3) {
                Py_DECREF(key);
                return 0;
            }
            s->conn[i] = Py_NewRef(PyTuple_GET_ITEM(key, 0));
            s->thread[i] = Py_NewRef(PyTuple_GET_ITEM(key, 1));
            s->tp[i] = Py_NewRef(PyTuple_GET_ITEM(key, 2));
            Py_DECREF(key);
            if (s->kind[i] == OTHER)
                continue;
        } else {
            s->tp[i] = PyDict_CheckExact(attrs) ? dict_get(attrs, K_traceparent) : NULL;
            Py_DECREF(attrs);
            if (s->tp[i] == NULL)
                return PyErr_Occurred() ? -1 : 0;
            if (s->kind[i] == OTHER)
                continue;
            if ((s->conn[i] = PyObject_CallOneArg(fn_conn, o)) == NULL ||
                (s->thread[i] = PyObject_CallOneArg(fn_thread, o)) == NULL)
                return -1;
        }
        /* the process: spans of one process share their resource dict, read once per run */
        PyObject *res = field(o, L, F_RESOURCE);
        if (res == NULL)
            return -1;
        /* direct-mapped by address: a slot keeps the last resource that hashed to it */
        size_t slot = (((size_t)res >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - PROC_CACHE_BITS);
        PyObject *proc = s->res_seen[slot] == res ? Py_NewRef(s->proc_of[slot]) : NULL;
        if (proc == NULL) {
            if (PyDict_CheckExact(res)) {
                PyObject *host = dict_get(res, K_host), *pid = host ? dict_get(res, K_pid) : NULL;
                proc = pid ? PyTuple_Pack(2, host, pid) : NULL;
                Py_XDECREF(host);
                Py_XDECREF(pid);
            } else {
                proc = PyObject_CallOneArg(fn_process, o);
            }
            if (proc == NULL) {
                Py_DECREF(res);
                return -1;
            }
            s->res_seen[slot] = res; /* compared by identity only: the span holds it */
            Py_XSETREF(s->proc_of[slot], Py_NewRef(proc));
        }
        Py_DECREF(res);
        s->proc[i] = proc;
    }
    /* span ids in a table: a parent's span by its id; two spans with one id: the specification runs */
    size_t cap = 16;
    while (cap < 2 * (size_t)m)
        cap *= 2;
    s->ids = PyMem_Calloc(cap, sizeof(Py_ssize_t));
    if (s->ids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->ids_cap = cap;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_hash_t h = PyObject_Hash(s->sid[i]);
        if (h == -1)
            return -1;
        s->hash[i] = h;
        for (size_t k = (size_t)h & (cap - 1);; k = (k + 1) & (cap - 1)) {
            Py_ssize_t j = s->ids[k] - 1;
            if (j < 0) {
                s->ids[k] = i + 1;
                break;
            }
            if (s->hash[j] == h && same_str(s->sid[j], s->sid[i]))
                return 0;
        }
    }
    return 1;
}

/* The span whose id is `id`: its index, or -1. */
static Py_ssize_t find_id(const Spans *s, PyObject *id)
{
    if (id == NULL || !PyUnicode_Check(id))
        return -1;
    Py_hash_t h = PyObject_Hash(id); /* cached in the str */
    if (h == -1) {
        PyErr_Clear();
        return -1;
    }
    for (size_t k = (size_t)h & (s->ids_cap - 1);; k = (k + 1) & (s->ids_cap - 1)) {
        Py_ssize_t j = s->ids[k] - 1;
        if (j < 0)
            return -1;
        if (s->hash[j] == h && same_str(s->sid[j], id))
            return j;
    }
}

/* ---- groups by key: a dict for equality, and before it a table by identity ------------------- */
/* Spans of one connection (one process) share their key object (capture/rows.py's facts, the
 * compiled path's per-connection key; read_spans's process cache): most lookups are answered by
 * the pointer without hashing a tuple. Equal keys that are distinct objects meet in the dict. */
typedef struct {
    PyObject *dict;   /* key -> group */
    PyObject **keys;  /* open addressing by address; borrowed (the spans hold them) */
    Py_ssize_t *vals; /* the group, or -1: not in the dict */
    size_t cap, used;
    Py_ssize_t ngroups;
} Groups;

static int groups_init(Groups *g)
{
    memset(g, 0, sizeof *g);
    g->cap = 64;
    g->dict = PyDict_New();
    g->keys = PyMem_Calloc(g->cap, sizeof(PyObject *));
    g->vals = PyMem_Malloc(g->cap * sizeof(Py_ssize_t));
    if (!g->dict || !g->keys || !g->vals) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void groups_free(Groups *g)
{
    Py_XDECREF(g->dict);
    PyMem_Free(g->keys);
    PyMem_Free(g->vals);
}

static size_t ptr_slot(const Groups *g, PyObject *key)
{
    size_t h = (size_t)key >> 4;
    h ^= h >> 17;
    size_t k = (h * 0x9E3779B97F4A7C15ull) & (g->cap - 1);
    while (g->keys[k] != NULL && g->keys[k] != key)
        k = (k + 1) & (g->cap - 1);
    return k;
}

static int groups_remember(Groups *g, PyObject *key, Py_ssize_t v)
{
    if (2 * (g->used + 1) > g->cap) {
        size_t old_cap = g->cap;
        PyObject **old_keys = g->keys;
        Py_ssize_t *old_vals = g->vals;
        g->cap *= 2;
        g->keys = PyMem_Calloc(g->cap, sizeof(PyObject *));
        g->vals = PyMem_Malloc(g->cap * sizeof(Py_ssize_t));
        if (!g->keys || !g->vals) {
            PyMem_Free(old_keys);
            PyMem_Free(old_vals);
            PyErr_NoMemory();
            return -1;
        }
        for (size_t k = 0; k < old_cap; k++)
            if (old_keys[k] != NULL) {
                size_t at = ptr_slot(g, old_keys[k]);
                g->keys[at] = old_keys[k];
                g->vals[at] = old_vals[k];
            }
        PyMem_Free(old_keys);
        PyMem_Free(old_vals);
    }
    size_t at = ptr_slot(g, key);
    if (g->keys[at] == NULL)
        g->used++;
    g->keys[at] = key;
    g->vals[at] = v;
    return 0;
}

/* The group of `key`: a new one when `create`, else -1 when it has none; -2 on error. */
static Py_ssize_t group_of(Groups *g, PyObject *key, int create)
{
    size_t at = ptr_slot(g, key);
    if (g->keys[at] == key && (g->vals[at] >= 0 || !create))
        return g->vals[at];
    PyObject *v = PyDict_GetItemWithError(g->dict, key);
    Py_ssize_t id;
    if (v != NULL) {
        id = PyLong_AsSsize_t(v);
    } else if (PyErr_Occurred()) {
        return -2;
    } else if (!create) {
        id = -1;
    } else {
        id = g->ngroups;
        PyObject *o = PyLong_FromSsize_t(id);
        if (o == NULL || PyDict_SetItem(g->dict, key, o) < 0) {
            Py_XDECREF(o);
            return -2;
        }
        Py_DECREF(o);
        g->ngroups++;
    }
    return groups_remember(g, key, id) < 0 ? -2 : id;
}

/* ---- Rule 2 ---------------------------------------------------------------------------------- */
typedef struct {
    int64_t fit;
    PyObject *cid, *sid; /* ties: by client id, then server id */
    Py_ssize_t c, k;     /* k: which of c's sorted candidates (0: the best) */
} Entry;

static int entry_lt(const Entry *a, const Entry *b)
{
    if (a->fit != b->fit)
        return a->fit < b->fit;
    if (a->cid != b->cid)
        return str_lt(a->cid, b->cid);
    return str_lt(a->sid, b->sid);
}

static void heap_push(Entry *h, Py_ssize_t *len, Entry e)
{
    Py_ssize_t i = (*len)++;
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!entry_lt(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static Entry heap_pop(Entry *h, Py_ssize_t *len)
{
    Entry top = h[0], last = h[--(*len)];
    Py_ssize_t i = 0, n = *len;
    for (;;) {
        Py_ssize_t l = 2 * i + 1, r = l + 1, m = i;
        const Entry *best = &last;
        if (l < n && entry_lt(&h[l], best)) {
            m = l;
            best = &h[l];
        }
        if (r < n && entry_lt(&h[r], best))
            m = r;
        if (m == i)
            break;
        h[i] = h[m];
        i = m;
    }
    if (n)
        h[i] = last;
    return top;
}

typedef struct {
    int64_t fit;
    PyObject *sid;
    Py_ssize_t j;
} Cand;

static int cmp_cand(const void *a, const void *b)
{
    const Cand *x = a, *y = b;
    if (x->fit != y->fit)
        return x->fit < y->fit ? -1 : 1;
    return str_lt(x->sid, y->sid) ? -1 : str_lt(y->sid, x->sid);
}

/* A connection's open servers sorted by end (then span order): [lo, hi) of `order`. */
typedef struct {
    Py_ssize_t lo, hi;
} Group;

typedef struct {
    const Spans *s;
    const Py_ssize_t *group; /* per span: its connection group, or -1 */
} SortCtx;

static SortCtx sort_ctx; /* qsort has no context argument; the GIL serializes callers */

static int cmp_group_end(const void *a, const void *b)
{
    Py_ssize_t i = *(const Py_ssize_t *)a, j = *(const Py_ssize_t *)b;
    Py_ssize_t gi = sort_ctx.group[i], gj = sort_ctx.group[j];
    if (gi != gj)
        return gi < gj ? -1 : 1;
    int64_t ei = sort_ctx.s->end[i], ej = sort_ctx.s->end[j];
    if (ei != ej)
        return ei < ej ? -1 : 1;
    return i < j ? -1 : i > j;
}

static int cmp_group_start(const void *a, const void *b)
{
    Py_ssize_t i = *(const Py_ssize_t *)a, j = *(const Py_ssize_t *)b;
    Py_ssize_t gi = sort_ctx.group[i], gj = sort_ctx.group[j];
    if (gi != gj)
        return gi < gj ? -1 : 1;
    int64_t si = sort_ctx.s->start[i], sj = sort_ctx.s->start[j];
    if (si != sj)
        return si < sj ? -1 : 1;
    return i < j ? -1 : i > j;
}

static int64_t iabs(int64_t v) { return v < 0 ? -v : v; }

/* The candidates of client c among its connection's servers (sorted by end): `out` (may be NULL:
 * only the best is wanted, into *best). Returns how many, -1 on no memory. */
static Py_ssize_t candidates(const Spans *s, const Py_ssize_t *order, Group g, Py_ssize_t c, int64_t slack,
                             Cand **out, Cand *best)
{
    int64_t cs = s->start[c], ce = s->end[c], lo_v = cs - slack, hi_v = ce + slack;
    Py_ssize_t count = 0;
    if (out == NULL) {
        /* only the best: outward from the servers ending at the client's end, since a server's fit
         * is at least its distance in end; a side stops at the window's edge or past the best fit so
         * far (ties go on: by id) */
        Py_ssize_t mid = g.lo, top = g.hi;
        while (mid < top) { /* bisect_left(ends, ce) */
            Py_ssize_t h = (mid + top) / 2;
            if (s->end[order[h]] < ce)
                mid = h + 1;
            else
                top = h;
        }
        for (int side = 0; side < 2; side++) {
            for (Py_ssize_t k = side ? mid - 1 : mid; side ? k >= g.lo : k < g.hi; k += side ? -1 : 1) {
                Py_ssize_t j = order[k];
                int64_t e = s->end[j], d_end = iabs(ce - e);
                if ((side ? e < lo_v : e > hi_v) || (count > 0 && d_end > best->fit))
                    break;
                if (s->start[j] > hi_v || e < lo_v) /* (e < lo_v on the right: a client ending before it starts) */
                    continue;
                Cand x = {d_end + iabs(s->start[j] - cs), s->sid[j], j};
                if (count == 0 || cmp_cand(&x, best) < 0)
                    *best = x;
                count++;
            }
        }
        return count;
    }
    Py_ssize_t lo = g.lo, hi = g.hi;
    while (lo < hi) { /* bisect_left(ends, cs - slack) */
        Py_ssize_t mid = (lo + hi) / 2;
        if (s->end[order[mid]] < lo_v)
            lo = mid + 1;
        else
            hi = mid;
    }
    Py_ssize_t a = lo;
    lo = a, hi = g.hi;
    while (lo < hi) { /* bisect_right(ends, ce + slack) */
        Py_ssize_t mid = (lo + hi) / 2;
        if (hi_v < s->end[order[mid]])
            hi = mid;
        else
            lo = mid + 1;
    }
    Py_ssize_t b = lo;
    Cand *list = PyMem_Malloc((b - a ? b - a : 1) * sizeof(Cand));
    if (list == NULL)
        return -1;
    for (Py_ssize_t k = a; k < b; k++) {
        Py_ssize_t j = order[k];
        if (s->start[j] > hi_v)
            continue;
        list[count++] = (Cand){iabs(ce - s->end[j]) + iabs(s->start[j] - cs), s->sid[j], j};
    }
    qsort(list, count, sizeof(Cand), cmp_cand);
    *out = list;
    return count;
}

static int set_parent(Spans *s, Py_ssize_t i, PyObject *parent)
{
    Py_XSETREF(s->par[i], Py_NewRef(parent));
    return 0;
}

/* Rule 2. Returns links made, -1 on error. */
static Py_ssize_t rule2(Spans *s, int64_t slack)
{
    Py_ssize_t n = s->n, m = n ? n : 1, made = -1, ngroups = 0, nservers = 0, heap_len = 0;
    Groups groups;
    int groups_ok = groups_init(&groups) == 0;
    Py_ssize_t *group = PyMem_Malloc(m * sizeof(Py_ssize_t)), *order = PyMem_Malloc(m * sizeof(Py_ssize_t));
    Group *bounds = NULL;
    char *used = PyMem_Calloc(m, 1);
    Entry *heap = PyMem_Malloc(m * sizeof(Entry));
    Cand **rest = PyMem_Calloc(m, sizeof(Cand *));
    Py_ssize_t *rest_n = PyMem_Calloc(m, sizeof(Py_ssize_t));
    if (!groups_ok || !group || !order || !used || !heap || !rest || !rest_n) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        group[i] = -1;
        if (!(s->open[i] && s->kind[i] == SERVER && s->conn[i] != Py_None))
            continue;
        if ((group[i] = group_of(&groups, s->conn[i], 1)) < 0)
            goto done;
        order[nservers++] = i;
    }
    ngroups = groups.ngroups;
    sort_ctx = (SortCtx){s, group};
    qsort(order, nservers, sizeof(Py_ssize_t), cmp_group_end);
    bounds = PyMem_Malloc((ngroups ? ngroups : 1) * sizeof(Group));
    if (bounds == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nservers; k++) {
        Py_ssize_t g = group[order[k]];
        if (k == 0 || group[order[k - 1]] != g)
            bounds[g].lo = k;
        bounds[g].hi = k + 1;
    }
    /* a CLIENT span already answered by a SERVER span is taken */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s->par[i] != NULL && s->kind[i] == SERVER) {
            Py_ssize_t j = find_id(s, s->par[i]);
            if (j >= 0)
                used[j] = 1;
        }
    }
    Py_ssize_t *client_group = PyMem_Malloc(m * sizeof(Py_ssize_t));
    if (client_group == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c < n; c++) {
        client_group[c] = -1;
        if (s->kind[c] != CLIENT || used[c] || s->conn[c] == Py_None)
            continue;
        Py_ssize_t g = group_of(&groups, s->conn[c], 0);
        if (g == -2) {
            PyMem_Free(client_group);
            goto done;
        }
        if (g < 0)
            continue;
        client_group[c] = g;
        Cand best;
        if (candidates(s, order, bounds[client_group[c]], c, slack, NULL, &best) > 0)
            heap_push(heap, &heap_len, (Entry){best.fit, s->sid[c], best.sid, c, 0});
    }
    made = 0;
    while (heap_len) {
        Entry e = heap_pop(heap, &heap_len);
        if (used[e.c])
            continue;
        Py_ssize_t j = -1;
        if (rest[e.c] != NULL)
            j = rest[e.c][e.k].j;
        else { /* the best: found again among the connection's servers */
            Cand best;
            candidates(s, order, bounds[client_group[e.c]], e.c, slack, NULL, &best);
            j = best.j;
        }
        if (s->par[j] == NULL) {
            used[e.c] = 1;
            set_parent(s, j, s->sid[e.c]);
            made++;
            continue;
        }
        if (rest[e.c] == NULL) {
            Py_ssize_t got = candidates(s, order, bounds[client_group[e.c]], e.c, slack, &rest[e.c], NULL);
            if (got < 0) {
                PyErr_NoMemory();
                made = -1;
                break;
            }
            rest_n[e.c] = got;
        }
        if (e.k + 1 < rest_n[e.c]) {
            Cand x = rest[e.c][e.k + 1];
            heap_push(heap, &heap_len, (Entry){x.fit, e.cid, x.sid, e.c, e.k + 1});
        }
    }
    PyMem_Free(client_group);
done:
    groups_free(&groups);
    PyMem_Free(group);
    PyMem_Free(order);
    PyMem_Free(bounds);
    PyMem_Free(used);
    PyMem_Free(heap);
    if (rest != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            PyMem_Free(rest[i]);
    PyMem_Free(rest);
    PyMem_Free(rest_n);
    return made;
}

/* ---- Rule 3 ---------------------------------------------------------------------------------- */
/* Returns 0, -1 on error; counts into *in_process and *ambiguous. */
static int rule3(Spans *s, Py_ssize_t *in_process, Py_ssize_t *ambiguous)
{
    Py_ssize_t n = s->n, m = n ? n : 1, nsrv = 0, ncli = 0;
    int rc = -1;
    Groups procs;
    int procs_ok = groups_init(&procs) == 0;
    Py_ssize_t *group = PyMem_Malloc(m * sizeof(Py_ssize_t));
    Py_ssize_t *srv = PyMem_Malloc(m * sizeof(Py_ssize_t)), *cli = PyMem_Malloc(m * sizeof(Py_ssize_t));
    Py_ssize_t *active = PyMem_Malloc(m * sizeof(Py_ssize_t)), *pick = PyMem_Malloc(m * sizeof(Py_ssize_t));
    if (!procs_ok || !group || !srv || !cli || !active || !pick) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        group[i] = -1;
        int server = s->kind[i] == SERVER;
        int client = s->kind[i] == CLIENT && s->open[i] && s->par[i] == NULL;
        if (!server && !client)
            continue;
        if ((group[i] = group_of(&procs, s->proc[i], 1)) < 0)
            goto done;
        if (server)
            srv[nsrv++] = i;
        else
            cli[ncli++] = i;
    }
    sort_ctx = (SortCtx){s, group};
    qsort(srv, nsrv, sizeof(Py_ssize_t), cmp_group_start);
    qsort(cli, ncli, sizeof(Py_ssize_t), cmp_group_start);
    Py_ssize_t k = 0, nactive = 0, current = -1;
    for (Py_ssize_t x = 0; x < ncli; x++) {
        Py_ssize_t c = cli[x], g = group[c];
        if (g != current) { /* the next process: its servers from the start */
            current = g;
            nactive = 0;
            while (k < nsrv && group[srv[k]] < g)
                k++;
        }
        int64_t t = s->start[c];
        while (k < nsrv && group[srv[k]] == g && s->start[srv[k]] <= t)
            active[nactive++] = srv[k++];
        Py_ssize_t kept = 0;
        for (Py_ssize_t a = 0; a < nactive; a++)
            if (s->end[active[a]] >= t)
                active[kept++] = active[a];
        nactive = kept;
        Py_ssize_t npick = 0;
        PyObject *th = s->thread[c];
        if (th != Py_None) {
            for (Py_ssize_t a = 0; a < nactive; a++) {
                int eq = PyObject_RichCompareBool(s->thread[active[a]], th, Py_EQ);
                if (eq < 0)
                    goto done;
                if (eq)
                    pick[npick++] = active[a];
            }
        }
        if (npick == 0) {
            memcpy(pick, active, nactive * sizeof(Py_ssize_t));
            npick = nactive;
        }
        if (npick == 1) {
            set_parent(s, c, s->sid[pick[0]]);
            (*in_process)++;
        } else if (npick > 1) {
            (*ambiguous)++;
        }
    }
    rc = 0;
done:
    groups_free(&procs);
    PyMem_Free(group);
    PyMem_Free(srv);
    PyMem_Free(cli);
    PyMem_Free(active);
    PyMem_Free(pick);
    return rc;
}

/* ---- Rule 4 ---------------------------------------------------------------------------------- */
static int rule4(Spans *s, PyObject *fn_parse)
{
    Py_ssize_t n = s->n, m = n ? n : 1;
    int rc = -1;
    Py_ssize_t *pidx = PyMem_Malloc(m * sizeof(Py_ssize_t)), *root_of = PyMem_Malloc(m * sizeof(Py_ssize_t));
    Py_ssize_t *path = PyMem_Malloc(m * sizeof(Py_ssize_t)), *on_path = PyMem_Calloc(m, sizeof(Py_ssize_t));
    Py_ssize_t *first_frozen = PyMem_Malloc(m * sizeof(Py_ssize_t)), *carried = PyMem_Malloc(m * sizeof(Py_ssize_t));
    PyObject **carried_trace = PyMem_Calloc(m, sizeof(PyObject *)), **trace = PyMem_Calloc(m, sizeof(PyObject *));
    if (!pidx || !root_of || !path || !on_path || !first_frozen || !carried || !carried_trace || !trace) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        pidx[i] = find_id(s, s->par[i]);
        root_of[i] = first_frozen[i] = carried[i] = -1;
    }
    for (Py_ssize_t i0 = 0; i0 < n; i0++) {
        Py_ssize_t i = i0, np = 0, stamp = i0 + 1;
        while (root_of[i] < 0 && pidx[i] >= 0 && on_path[i] != stamp) {
            path[np++] = i;
            on_path[i] = stamp;
            i = pidx[i];
        }
        Py_ssize_t r = root_of[i] >= 0 ? root_of[i] : i;
        for (Py_ssize_t p = 0; p < np; p++)
            root_of[path[p]] = r;
        root_of[i] = r;
    }
    /* per group (its root): the first frozen member, else the earliest carried traceparent */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t r = root_of[i];
        if (s->frozen[i]) {
            if (first_frozen[r] < 0)
                first_frozen[r] = i;
            continue;
        }
        if (s->tp[i] == NULL || s->tp[i] == Py_None)
            continue;
        PyObject *parsed = PyObject_CallOneArg(fn_parse, s->tp[i]);
        if (parsed == NULL)
            goto done;
        if (parsed != Py_None) {
            PyObject *t = PyTuple_GET_ITEM(parsed, 0);
            int better = carried[r] < 0 || s->start[i] < s->start[carried[r]];
            if (!better && s->start[i] == s->start[carried[r]]) {
                better = PyObject_RichCompareBool(t, carried_trace[r], Py_LT);
                if (better < 0) {
                    Py_DECREF(parsed);
                    goto done;
                }
            }
            if (better) {
                carried[r] = i;
                Py_XSETREF(carried_trace[r], Py_NewRef(t));
            }
        }
        Py_DECREF(parsed);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s->frozen[i])
            continue; /* (a frozen member's traceparent counts for nothing: its trace wins anyway) */
        Py_ssize_t r = root_of[i];
        if (trace[r] == NULL) {
            PyObject *t = NULL;
            if (first_frozen[r] >= 0) {
                if ((t = field(s->items[first_frozen[r]], layout_of(Py_TYPE(s->items[first_frozen[r]])), F_TRACE)) == NULL)
                    goto done;
                if (t == Py_None)
                    Py_CLEAR(t);
            }
            /* frozen members' traceparents, when no frozen member had a trace id */
            if (t == NULL && first_frozen[r] >= 0) {
                for (Py_ssize_t j = 0; j < n; j++) {
                    if (root_of[j] != r || !s->frozen[j] || s->tp[j] == NULL || s->tp[j] == Py_None)
                        continue;
                    PyObject *parsed = PyObject_CallOneArg(fn_parse, s->tp[j]);
                    if (parsed == NULL)
                        goto done;
                    if (parsed != Py_None) {
                        PyObject *tt = PyTuple_GET_ITEM(parsed, 0);
                        int better = carried[r] < 0 || s->start[j] < s->start[carried[r]];
                        if (!better && s->start[j] == s->start[carried[r]])
                            better = PyObject_RichCompareBool(tt, carried_trace[r], Py_LT);
                        if (better > 0) {
                            carried[r] = j;
                            Py_XSETREF(carried_trace[r], Py_NewRef(tt));
                        }
                    }
                    Py_DECREF(parsed);
                    if (PyErr_Occurred())
                        goto done;
                }
            }
            if (t == NULL && carried[r] >= 0)
                t = Py_NewRef(carried_trace[r]);
            if (t == NULL && (t = field(s->items[r], layout_of(Py_TYPE(s->items[r])), F_TRACE)) == NULL)
                goto done;
            trace[r] = t;
        }
        if (set_field(s->items[i], F_TRACE, trace[r]) < 0)
            goto done;
    }
    rc = 0;
done:
    if (carried_trace != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(carried_trace[i]);
    if (trace != NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(trace[i]);
    PyMem_Free(carried_trace);
    PyMem_Free(trace);
    PyMem_Free(pidx);
    PyMem_Free(root_of);
    PyMem_Free(path);
    PyMem_Free(on_path);
    PyMem_Free(first_frozen);
    PyMem_Free(carried);
    return rc;
}

/* The rules over spans read into s; the parents set on the spans. -1 on error. */
static int run_rules(Spans *s, long long slack, PyObject *fn_parse, Py_ssize_t stats[4])
{
    Py_ssize_t n = s->n;
    Py_ssize_t cross = rule2(s, slack);
    if (cross < 0)
        return -1;
    /* Rule 1 (fallback half): an open SERVER span with a traceparent but no captured caller */
    Py_ssize_t carried = 0, in_process = 0, ambiguous = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!(s->open[i] && s->kind[i] == SERVER && s->par[i] == NULL && s->tp[i] != Py_None))
            continue;
        PyObject *tp = PyObject_CallOneArg(fn_parse, s->tp[i]);
        if (tp == NULL)
            return -1;
        if (tp != Py_None) {
            set_parent(s, i, PyTuple_GET_ITEM(tp, 1));
            carried++;
        }
        Py_DECREF(tp);
    }
    if (rule3(s, &in_process, &ambiguous) < 0 || rule4(s, fn_parse) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s->open[i] && s->par[i] != NULL && set_field(s->items[i], F_PARENT, s->par[i]) < 0)
            return -1;
    }
    stats[0] = cross, stats[1] = in_process, stats[2] = carried, stats[3] = ambiguous;
    return 0;
}

static PyObject *link_spans(PyObject *self, PyObject *args)
{
    PyObject *list, *frozen, *fn_conn, *fn_thread, *fn_process, *fn_parse;
    long long slack;
    if (!PyArg_ParseTuple(args, "O!OLOOOO", &PyList_Type, &list, &frozen, &slack, &fn_conn, &fn_thread,
                          &fn_process, &fn_parse))
        return NULL;
    Spans s;
    memset(&s, 0, sizeof s);
    PyObject *result = NULL;
    Py_INCREF(list); /* its items are read by pointer: kept alive and the same throughout */
    int rc = read_spans(&s, list, frozen == Py_None ? NULL : frozen, -1, fn_conn, fn_thread, fn_process);
    Py_ssize_t st[4];
    if (rc <= 0)
        result = rc < 0 ? NULL : Py_NewRef(Py_None);
    else if (PyList_GET_SIZE(list) != s.n) /* a helper changed the list */
        result = Py_NewRef(Py_None);
    else if (run_rules(&s, slack, fn_parse, st) == 0)
        result = Py_BuildValue("(nnnn)", st[0], st[1], st[2], st[3]);
    spans_free(&s);
    Py_DECREF(list);
    return result;
}

typedef struct {
    int64_t end;
    Py_ssize_t i;
} ByEnd;

static int cmp_by_end(const void *a, const void *b)
{
    const ByEnd *x = a, *y = b;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i; /* list.sort is stable */
}

static PyObject *list_append_new(PyObject *list, PyObject *o)
{
    return PyList_Append(list, o) < 0 ? NULL : list;
}


/* StreamLinker._release (capture/traces/stream.py, the specification) in one call: see release's doc.
 * Links only the band that can reach the released spans; the rest of what is held is read for its
 * times (and a provisional parent) alone. */
static PyObject *release(PyObject *self, PyObject *args)
{
    PyObject *pending_in, *context_in, *cutoff_o, *fn_conn, *fn_thread, *fn_process, *fn_parse;
    long long newest_end, window, slack;
    Py_ssize_t max_pending;
    if (!PyArg_ParseTuple(args, "O!O!OLLnLOOOO", &PyList_Type, &pending_in, &PyList_Type, &context_in, &cutoff_o,
                          &newest_end, &window, &max_pending, &slack, &fn_conn, &fn_thread, &fn_process, &fn_parse))
        return NULL;
    int has_cutoff = cutoff_o != Py_None;
    long long cutoff = has_cutoff ? PyLong_AsLongLong(cutoff_o) : 0;
    if (cutoff == -1 && PyErr_Occurred())
        return NULL;
    /* copies: their items are read by pointer, kept alive and the same throughout */
    PyObject *pending = PyList_GetSlice(pending_in, 0, PY_SSIZE_T_MAX);
    PyObject *context = PyList_GetSlice(context_in, 0, PY_SSIZE_T_MAX);
    Spans s;
    memset(&s, 0, sizeof s);
    PyObject *result = NULL, *ready = NULL, *keep = NULL, *new_context = NULL, *all = NULL;
    PyObject **saved = NULL; /* the held spans' parent and trace id, put back after the run */
    ByEnd *order = NULL;
    int64_t *pstart = NULL, *pend = NULL, *cend = NULL;
    char *out = NULL, *band_out = NULL, *gone = NULL; /* gone: the answered CLIENT spans, by context index */
    Py_ssize_t nband = 0, *band_of = NULL; /* band_of: a context span's index in the run, -1 outside it */
    Py_ssize_t st[4] = {0, 0, 0, 0}, forced = 0, linked = 0, trimmed = 0;
    if (pending == NULL || context == NULL)
        goto done;
    Py_ssize_t np = PyList_GET_SIZE(pending), nc = PyList_GET_SIZE(context);
    pstart = PyMem_Malloc((np ? np : 1) * sizeof(int64_t));
    pend = PyMem_Malloc((np ? np : 1) * sizeof(int64_t));
    cend = PyMem_Malloc((nc ? nc : 1) * sizeof(int64_t));
    gone = PyMem_Calloc(nc + np ? nc + np : 1, 1);
    band_of = PyMem_Malloc((nc ? nc : 1) * sizeof(Py_ssize_t));
    out = PyMem_Calloc(np ? np : 1, 1);
    order = PyMem_Malloc((np ? np : 1) * sizeof(ByEnd));
    if (!pstart || !pend || !cend || !out || !order || !gone || !band_of) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *o = PyList_GET_ITEM(pending, i);
        int rc = time_of(o, F_START, &pstart[i]);
        if (rc > 0)
            rc = time_of(o, F_END, &pend[i]);
        if (rc <= 0) {
            result = rc < 0 ? NULL : Py_NewRef(Py_None);
            goto done;
        }
    }
    for (Py_ssize_t j = 0; j < nc; j++) {
        int rc = time_of(PyList_GET_ITEM(context, j), F_END, &cend[j]);
        if (rc <= 0) {
            result = rc < 0 ? NULL : Py_NewRef(Py_None);
            goto done;
        }
    }
    /* what goes: past the cutoff; under overload, the oldest quarter of the rest as well */
    Py_ssize_t nout = 0, nkeep = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        if (!has_cutoff || pend[i] < cutoff)
            out[i] = 1, nout++;
        else
            order[nkeep++] = (ByEnd){pend[i], i};
    }
    if (has_cutoff && nkeep >= max_pending) {
        qsort(order, nkeep, sizeof(ByEnd), cmp_by_end);
        forced = nkeep / 4 > 1 ? nkeep / 4 : 1;
        for (Py_ssize_t k = 0; k < forced; k++)
            out[order[k].i] = 1;
        nout += forced;
    }
    if (nout) { /* the band: the context that ended after the earliest held span of the run started */
        int64_t hi = INT64_MIN, lo = INT64_MAX;
        for (Py_ssize_t i = 0; i < np; i++)
            if (out[i] && pend[i] > hi)
                hi = pend[i];
        hi += slack;
        for (Py_ssize_t i = 0; i < np; i++)
            if ((out[i] || pstart[i] <= hi) && pstart[i] < lo)
                lo = pstart[i];
        lo -= slack;
        if ((all = PyList_New(0)) == NULL)
            goto done;
        for (Py_ssize_t j = 0; j < nc; j++) {
            band_of[j] = -1;
            if (cend[j] >= lo) {
                if (!list_append_new(all, PyList_GET_ITEM(context, j)))
                    goto done;
                band_of[j] = nband++;
            }
        }
        if ((band_out = PyMem_Malloc(np ? np : 1)) == NULL || (saved = PyMem_Calloc(2 * (np ? np : 1),
                                                                                      sizeof(PyObject *))) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        Py_ssize_t nheld = 0;
        for (Py_ssize_t i = 0; i < np; i++)
            if (out[i] || pstart[i] <= hi) {
                PyObject *o = PyList_GET_ITEM(pending, i);
                if (!list_append_new(all, o))
                    goto done;
                band_out[PyList_GET_SIZE(all) - 1 - nband] = out[i];
                if (!out[i]) { /* held: taken as it is, left as it was */
                    const Layout *L = layout_of(Py_TYPE(o));
                    if ((saved[2 * nheld] = field(o, L, F_PARENT)) == NULL ||
                        (saved[2 * nheld + 1] = field(o, L, F_TRACE)) == NULL)
                        goto done;
                    nheld++;
                }
            }
        int rc = read_spans(&s, all, NULL, nband, fn_conn, fn_thread, fn_process);
        if (rc <= 0 || PyList_GET_SIZE(all) != s.n) {
            result = rc < 0 ? NULL : Py_NewRef(Py_None);
            goto done;
        }
        if (run_rules(&s, slack, fn_parse, st) < 0)
            goto done;
        for (Py_ssize_t i = nband, h = 0; i < s.n; i++) {
            if (band_out[i - nband]) {
                linked += s.open[i] && s.par[i] != NULL; /* unlinked before the run, linked by it */
            } else {
                if (set_field(s.items[i], F_PARENT, saved[2 * h]) < 0 ||
                    set_field(s.items[i], F_TRACE, saved[2 * h + 1]) < 0)
                    goto done;
                h++;
            }
        }
        /* a CLIENT span (in the band or released) that a SERVER span (in the band or released: not a
         * held one, whose links were undone) has as parent is answered: not kept as context */
        char *in_run = PyMem_Malloc(s.n ? s.n : 1); /* by run index: 1 where answered */
        if (in_run == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memset(in_run, 0, s.n ? s.n : 1);
        for (Py_ssize_t i = 0; i < s.n; i++) {
            if (s.kind[i] != SERVER || s.par[i] == NULL || (i >= nband && !band_out[i - nband]))
                continue;
            Py_ssize_t j = find_id(&s, s.par[i]);
            if (j >= 0 && s.kind[j] == CLIENT && (j < nband || band_out[j - nband]))
                in_run[j] = 1;
        }
        for (Py_ssize_t j = 0; j < nc; j++)
            gone[j] = band_of[j] >= 0 && in_run[band_of[j]];
        for (Py_ssize_t i = nband; i < s.n; i++) /* the released: after the context, by run index */
            gone[nc + i - nband] = in_run[i];
        PyMem_Free(in_run);
    }
    ready = PyList_New(0);
    keep = PyList_New(0);
    if (ready == NULL || keep == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < np; i++)
        if (!list_append_new(out[i] ? ready : keep, PyList_GET_ITEM(pending, i)))
            goto done;
    /* released spans stay as context for a window: as their Held, and not the CLIENT spans answered */
    long long horizon = (has_cutoff ? cutoff : newest_end) - window;
    if ((new_context = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < nc; j++)
        if (cend[j] >= horizon && !gone[j] && !list_append_new(new_context, PyList_GET_ITEM(context, j)))
            goto done;
    if (nout) /* a released span stays as its Held (every released span was in the run: s.items) */
        for (Py_ssize_t i = nband; i < s.n; i++) {
            int64_t e = s.end[i];
            if (!band_out[i - nband] || e < horizon || gone[nc + i - nband])
                continue;
            PyObject *h = held_of(&s, i);
            if (h == NULL)
                goto done;
            int rc = PyList_Append(new_context, h);
            Py_DECREF(h);
            if (rc < 0)
                goto done;
        }
    Py_ssize_t nctx = PyList_GET_SIZE(new_context);
    if (nctx > max_pending / 2) { /* released in time order: the newest stay */
        trimmed = nctx - max_pending / 2;
        if (PyList_SetSlice(new_context, 0, trimmed, NULL) < 0)
            goto done;
    }
    result = Py_BuildValue("(OOO(nnnn)nnn)", ready, keep, new_context, st[0], st[1], st[2], st[3], linked, forced,
                           trimmed);
done:
    spans_free(&s);
    if (saved != NULL)
        for (Py_ssize_t k = 0; k < 2 * np; k++)
            Py_XDECREF(saved[k]);
    PyMem_Free(saved);
    PyMem_Free(band_out);
    PyMem_Free(gone);
    PyMem_Free(band_of);
    PyMem_Free(order);
    PyMem_Free(pstart);
    PyMem_Free(pend);
    PyMem_Free(cend);
    PyMem_Free(out);
    Py_XDECREF(all);
    Py_XDECREF(pending);
    Py_XDECREF(context);
    Py_XDECREF(ready);
    Py_XDECREF(keep);
    Py_XDECREF(new_context);
    return result;
}

/* ---- what the agent's worker reads of a batch before linking it --------------------------------- */
/* newest_end(spans, newest): the largest end time of the spans and `newest` (StreamLinker.add's
 * loop); None where an end is not an int that fits (the caller runs its loop). */
static PyObject *newest_end(PyObject *self, PyObject *args)
{
    PyObject *list;
    long long newest;
    if (!PyArg_ParseTuple(args, "O!L", &PyList_Type, &list, &newest))
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        PyObject *e = field(o, layout_of(Py_TYPE(o)), F_END);
        if (e == NULL)
            return NULL;
        int64_t end;
        int rc = int64_of(e, &end);
        Py_DECREF(e);
        if (rc < 0)
            return NULL;
        if (rc == 0)
            Py_RETURN_NONE;
        if (end > newest)
            newest = end;
    }
    return PyLong_FromLongLong(newest);
}

/* resources(spans): the spans' resource objects, each once (by identity), in the order first seen
 * (Agent._enrich: the spans of a process share one dict). */
static PyObject *resources(PyObject *self, PyObject *args)
{
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &list))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap *= 2;
    PyObject **seen = PyMem_Calloc(cap, sizeof(PyObject *)), *out = PyList_New(0);
    if (seen == NULL || out == NULL) {
        PyMem_Free(seen);
        Py_XDECREF(out);
        return seen == NULL ? PyErr_NoMemory() : NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        PyObject *r = field(o, layout_of(Py_TYPE(o)), F_RESOURCE);
        if (r == NULL)
            goto fail;
        size_t k = ((((size_t)r >> 4) * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
        while (seen[k] != NULL && seen[k] != r)
            k = (k + 1) & (cap - 1);
        if (seen[k] == NULL) {
            seen[k] = r; /* the list holds it from here: its address stays its own */
            if (PyList_Append(out, r) < 0) {
                Py_DECREF(r);
                goto fail;
            }
        }
        Py_DECREF(r);
    }
    PyMem_Free(seen);
    return out;
fail:
    PyMem_Free(seen);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"link", link_spans, METH_VARARGS,
     "link(spans, frozen, slack_ns, conn_key, thread, process, parse_traceparent) -> (cross_process, "
     "in_process, traceparent, ambiguous), or None where the Python must run: see capture.traces.linker.link."},
    {"release", release, METH_VARARGS,
     "release(pending, context, cutoff, newest_end, window_ns, max_pending, slack_ns, conn_key, thread, process, "
     "parse_traceparent) -> (ready, keep, context, link stats, linked, forced, context_trimmed), or None where "
     "the Python must run: capture.traces.stream.StreamLinker._release."},
    {"newest_end", newest_end, METH_VARARGS,
     "newest_end(spans, newest) -> the largest of newest and the spans' end times, or None where the Python must "
     "run: StreamLinker.add's loop."},
    {"resources", resources, METH_VARARGS,
     "resources(spans) -> the spans' resources, each once by identity, in the order first seen: Agent._enrich."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture.traces._link",
                                    "The agent's span linker (capture.traces.linker.link) in C.", -1, methods};

PyMODINIT_FUNC PyInit__link(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {{&A_kind, "kind"}, {&A_start, "start_time_unix_nano"}, {&A_end, "end_time_unix_nano"},
                 {&A_span_id, "span_id"}, {&A_parent, "parent_span_id"}, {&A_trace_id, "trace_id"},
                 {&A_attributes, "attributes"}, {&A_key, "key"}, {&A_resource, "resource"},
                 {&K_host, "host.name"}, {&K_pid, "process.pid"},
                 {&K_traceparent, "http.request.header.traceparent"}};
    for (size_t k = 0; k < sizeof(names) / sizeof(*names); k++)
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].text)) == NULL)
            return NULL;
    if (PyType_Ready(&HeldType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL || PyModule_AddObjectRef(m, "Held", (PyObject *)&HeldType) < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
