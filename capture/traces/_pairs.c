/* capture.traces._pairs: pairs() of capture/traces/crossnode.py in C (the cross-node linker's
 * pairing of one connection's clients and servers).
 *
 * crossnode.pairs is the specification: the same passes in the same order, the same ties,
 * the same links in the same order. The linker runs this when setup.py (`make setup`) built it
 * and the Python otherwise; tests/cluster/test_pairs.py compares the two. Times are int64
 * nanoseconds (Unix time until 2262). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define COST_FLOOR_NS 1000000LL
#define HISTORY 64

typedef struct {
    int64_t cost;
    Py_ssize_t j;
} Cand;

typedef struct {
    int64_t end;
    Py_ssize_t j;
} ByEnd;

/* Rows of candidates per client, in one array: row i is cand[off[i] .. off[i + 1]). */
typedef struct {
    Cand *cand;
    Py_ssize_t *off;
} Rows;

static int cmp_by_end(const void *a, const void *b)
{
    const ByEnd *x = a, *y = b;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

static int cmp_cand(const void *a, const void *b)
{
    const Cand *x = a, *y = b;
    if (x->cost != y->cost)
        return x->cost < y->cost ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t iabs(int64_t v)
{
    return v < 0 ? -v : v;
}

typedef struct {
    Py_ssize_t n, m;
    int64_t *c0, *c1, *s0, *s1, *starts; /* starts: servers' starts on the client's clock */
    ByEnd *by_end;
    char *c_late, *s_late;
} In;

/* First index of by_end with end >= v (bisect_left) / with end > v (bisect_right). */
static Py_ssize_t lower(const In *in, int64_t v)
{
    Py_ssize_t lo = 0, hi = in->m;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (in->by_end[mid].end < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static Py_ssize_t upper(const In *in, int64_t v)
{
    Py_ssize_t lo = 0, hi = in->m;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (v < in->by_end[mid].end)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Every client's candidates within `slack`, cheapest first; with `by_end`, only servers that
 * started by the client's end give or take `started`. */
static int candidates(const In *in, int64_t slack, int by_end, int64_t started, Rows *r)
{
    Py_ssize_t cap = in->n + 16, used = 0;
    r->cand = PyMem_Malloc(cap * sizeof(Cand));
    r->off = PyMem_Malloc((in->n + 1) * sizeof(Py_ssize_t));
    if (!r->cand || !r->off)
        return -1;
    for (Py_ssize_t i = 0; i < in->n; i++) {
        int64_t c0 = in->c0[i], c1 = in->c1[i], lo = c0 - slack, hi = c1 + slack;
        int64_t first = by_end ? c1 + started : hi;
        Py_ssize_t a = lower(in, lo), b = upper(in, hi);
        r->off[i] = used;
        if (used + (b - a) > cap) {
            while (used + (b - a) > cap)
                cap *= 2;
            Cand *more = PyMem_Realloc(r->cand, cap * sizeof(Cand));
            if (!more)
                return -1;
            r->cand = more;
        }
        for (Py_ssize_t k = a; k < b; k++) {
            Py_ssize_t j = in->by_end[k].j;
            if (lo <= in->starts[j] && in->starts[j] <= first) {
                r->cand[used].cost = iabs(c1 - in->by_end[k].end) + iabs(in->starts[j] - c0);
                r->cand[used].j = j;
                used++;
            }
        }
        qsort(r->cand + r->off[i], used - r->off[i], sizeof(Cand), cmp_cand);
    }
    r->off[in->n] = used;
    return 0;
}

static void rows_free(Rows *r)
{
    PyMem_Free(r->cand);
    PyMem_Free(r->off);
}

static int64_t *i64s(PyObject *seq, Py_ssize_t n, int64_t shift)
{
    int64_t *out = PyMem_Malloc((n ? n : 1) * sizeof(int64_t));
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        long long v = PyLong_AsLongLong(PyList_GET_ITEM(seq, k));
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
        out[k] = (int64_t)v - shift;
    }
    return out;
}

static char *flags(PyObject *seq, Py_ssize_t n, int *any)
{
    char *out = PyMem_Calloc(n ? n : 1, 1);
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    if (seq == Py_None)
        return out;
    for (Py_ssize_t k = 0; k < n; k++) {
        int t = PyObject_IsTrue(PyList_GET_ITEM(seq, k));
        if (t < 0) {
            PyMem_Free(out);
            return NULL;
        }
        out[k] = (char)t;
        *any |= t;
    }
    return out;
}

static PyObject *pairs(PyObject *self, PyObject *args)
{
    PyObject *lc0, *lc1, *ls0, *ls1, *clate, *slate, *horizon, *hist;
    long long offset, slack, strict;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OOLLLOO!", &PyList_Type, &lc0, &PyList_Type, &lc1,
                          &PyList_Type, &ls0, &PyList_Type, &ls1, &clate, &slate, &offset, &slack,
                          &strict, &horizon, &PyList_Type, &hist))
        return NULL;
    In in = {0};
    in.n = PyList_GET_SIZE(lc0);
    in.m = PyList_GET_SIZE(ls0);
    if (PyList_GET_SIZE(lc1) != in.n || PyList_GET_SIZE(ls1) != in.m
            || (clate != Py_None && (!PyList_Check(clate) || PyList_GET_SIZE(clate) != in.n))
            || (slate != Py_None && (!PyList_Check(slate) || PyList_GET_SIZE(slate) != in.m))) {
        PyErr_SetString(PyExc_ValueError, "pairs: lists of unequal lengths");
        return NULL;
    }
    int has_h = horizon != Py_None;
    long long h0 = 0, h1 = 0;
    if (has_h && !PyArg_ParseTuple(horizon, "LL", &h0, &h1))
        return NULL;
    Py_ssize_t n = in.n, m = in.m, nh = PyList_GET_SIZE(hist);
    PyObject *out = NULL, *result = NULL;
    Rows strict_rows = {0}, exact_rows = {0}, fits = {0};
    Py_ssize_t *strict_clients = NULL, *exact_clients = NULL, *linked = NULL, *before = NULL, *after = NULL;
    Py_ssize_t *best_i = NULL;
    int64_t *best_cost = NULL, *typical = NULL, *history = NULL;
    char *taken = NULL, *has_best = NULL, *several = NULL;
    int any_late = 0, exact = 0;
    long ambiguous = 0;

    in.c0 = i64s(lc0, n, 0);
    in.c1 = i64s(lc1, n, 0);
    in.s0 = i64s(ls0, m, 0);
    in.s1 = i64s(ls1, m, 0);
    in.starts = i64s(ls0, m, (int64_t)offset);
    in.c_late = flags(clate, n, &any_late);
    in.s_late = flags(slate, m, &any_late);
    in.by_end = PyMem_Malloc((m ? m : 1) * sizeof(ByEnd));
    history = PyMem_Malloc((nh + n + 1) * sizeof(int64_t));
    if (!in.c0 || !in.c1 || !in.s0 || !in.s1 || !in.starts || !in.c_late || !in.s_late)
        goto done;
    if (!in.by_end || !history) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nh; k++) {
        long long v = PyLong_AsLongLong(PyList_GET_ITEM(hist, k));
        if (v == -1 && PyErr_Occurred())
            goto done;
        history[k] = v;
    }
    for (Py_ssize_t j = 0; j < m; j++) {
        in.by_end[j].end = in.s1[j] - offset;
        in.by_end[j].j = j;
    }
    qsort(in.by_end, m, sizeof(ByEnd), cmp_by_end);
    out = PyList_New(0);
    strict_clients = PyMem_Calloc(m + 1, sizeof(Py_ssize_t));
    exact_clients = PyMem_Calloc(m + 1, sizeof(Py_ssize_t));
    linked = PyMem_Malloc((n + 1) * sizeof(Py_ssize_t));
    before = PyMem_Malloc((n + 1) * sizeof(Py_ssize_t));
    after = PyMem_Malloc((n + 1) * sizeof(Py_ssize_t));
    taken = PyMem_Calloc(m + 1, 1);
    has_best = PyMem_Calloc(m + 1, 1);
    best_i = PyMem_Malloc((m + 1) * sizeof(Py_ssize_t));
    best_cost = PyMem_Malloc((m + 1) * sizeof(int64_t));
    typical = PyMem_Malloc((2 * n + nh + 1) * sizeof(int64_t));
    if (!out)
        goto done;
    if (!strict_clients || !exact_clients || !linked || !before || !after || !taken || !has_best
            || !best_i || !best_cost || !typical) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        linked[i] = -1;

    /* Pass 1: exact clocks, one partner each side. */
    if (candidates(&in, strict, 1, 0, &strict_rows) < 0)
        goto nomem;
    for (Py_ssize_t k = 0; k < strict_rows.off[n]; k++)
        strict_clients[strict_rows.cand[k].j]++;
    /* Exact containment: stand-ins pair only so. */
    exact = any_late;
    if (candidates(&in, 0, 0, 0, &exact_rows) < 0)
        goto nomem;
    for (Py_ssize_t k = 0; k < exact_rows.off[n]; k++)
        exact_clients[exact_rows.cand[k].j]++;
    /* A client overlapping two servers within the exact slack (joined from two requests). */
    several = PyMem_Calloc(n + 1, 1);
    if (!several)
        goto nomem;
    for (Py_ssize_t i = 0; i < n; i++) {
        int k = 0;
        for (Py_ssize_t a = strict_rows.off[i]; a < strict_rows.off[i + 1]; a++)
            k += in.s1[strict_rows.cand[a].j] - offset > in.c0[i];
        several[i] = k > 1;
    }
#define SEVERAL(i) (several[i])
#define RIPE(i, j) (!(in.c_late[i] && in.s_late[j]) \
                    && (!has_h || in.s1[j] < h1 || (in.s1[j] < h0 && in.c1[i] < h0)))
#define IS_LATE(i, j) (in.c_late[i] || in.s_late[j])
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t a = strict_rows.off[i], b = strict_rows.off[i + 1];
        if (b - a != 1)
            continue;
        Py_ssize_t j = strict_rows.cand[a].j;
        if (strict_clients[j] != 1)
            continue;
        if (SEVERAL(i)) {
            ambiguous++;
            continue;
        }
        if (!RIPE(i, j))
            continue;
        if (exact && IS_LATE(i, j)) {
            Py_ssize_t ea = exact_rows.off[i], eb = exact_rows.off[i + 1];
            if (!(eb - ea == 1 && exact_rows.cand[ea].j == j && exact_clients[j] == 1))
                continue;
        }
        linked[i] = j;
        history[nh++] = strict_rows.cand[a].cost;
        PyObject *t = Py_BuildValue("(nniL)", i, j, 0, (long long)strict_rows.cand[a].cost);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    int64_t *recent = history + (nh > HISTORY ? nh - HISTORY : 0);
    Py_ssize_t nrecent = nh > HISTORY ? HISTORY : nh;

    /* Pass 2: within the slack, for the clients still without a server. */
    if (candidates(&in, slack, 1, slack - strict, &fits) < 0)
        goto nomem;
    for (Py_ssize_t i = 0; i < n; i++)
        if (linked[i] >= 0)
            taken[linked[i]] = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (linked[i] >= 0)
            continue;
        for (Py_ssize_t k = fits.off[i]; k < fits.off[i + 1]; k++) {
            Py_ssize_t j = fits.cand[k].j;
            if (!taken[j] && (!has_best[j] || fits.cand[k].cost < best_cost[j])) {
                has_best[j] = 1;
                best_cost[j] = fits.cand[k].cost;
                best_i[j] = i;
            }
        }
    }
    Py_ssize_t nt = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (linked[i] >= 0 || fits.off[i] == fits.off[i + 1])
            continue;
        Cand first = fits.cand[fits.off[i]];
        if (!taken[first.j] && best_i[first.j] == i)
            typical[nt++] = first.cost;
    }
    for (Py_ssize_t k = 0; k < nrecent; k++)
        typical[nt++] = recent[k];
    int64_t limit = COST_FLOOR_NS;
    if (nt) {
        qsort(typical, nt, sizeof(int64_t), cmp_i64);
        limit = 3 * typical[nt / 2] + COST_FLOOR_NS;
    }
    before[0] = -1;
    for (Py_ssize_t i = 0; i < n; i++)
        before[i + 1] = before[i] > linked[i] ? before[i] : linked[i];
    after[n] = m;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        Py_ssize_t next = i + 1 < n && linked[i + 1] >= 0 ? linked[i + 1] : m;
        after[i] = after[i + 1] < next ? after[i + 1] : next;
    }
    Py_ssize_t made = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (linked[i] >= 0)
            continue;
        Py_ssize_t a = fits.off[i], b = fits.off[i + 1], k = a;
        while (k < b && taken[fits.cand[k].j])
            k++;
        if (k == b)
            continue;
        int64_t cost = fits.cand[k].cost;
        Py_ssize_t j = fits.cand[k].j, k2 = k + 1;
        if (!RIPE(i, j) || (exact && IS_LATE(i, j)))
            continue;
        if (SEVERAL(i)) {
            ambiguous++;
            continue;
        }
        while (k2 < b && taken[fits.cand[k2].j])
            k2++;
        int tie = k2 < b && fits.cand[k2].cost == cost;
        Py_ssize_t lo = before[i] > made ? before[i] : made;
        if (tie || best_i[j] != i || !(lo < j && j < after[i]) || cost > limit) {
            ambiguous++;
            continue;
        }
        linked[i] = j;
        taken[j] = 1;
        made = j;
        PyObject *t = Py_BuildValue("(nniL)", i, j, b - a == 1 ? 1 : 2, (long long)cost);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    result = Py_BuildValue("(Ol)", out, ambiguous);
    goto done;
nomem:
    if (!PyErr_Occurred())
        PyErr_NoMemory();
done:
    Py_XDECREF(out);
    rows_free(&strict_rows);
    rows_free(&exact_rows);
    rows_free(&fits);
    PyMem_Free(in.c0);
    PyMem_Free(in.c1);
    PyMem_Free(in.s0);
    PyMem_Free(in.s1);
    PyMem_Free(in.starts);
    PyMem_Free(in.c_late);
    PyMem_Free(in.s_late);
    PyMem_Free(in.by_end);
    PyMem_Free(history);
    PyMem_Free(strict_clients);
    PyMem_Free(exact_clients);
    PyMem_Free(linked);
    PyMem_Free(before);
    PyMem_Free(after);
    PyMem_Free(taken);
    PyMem_Free(several);
    PyMem_Free(has_best);
    PyMem_Free(best_i);
    PyMem_Free(best_cost);
    PyMem_Free(typical);
    return result;
}

static PyMethodDef methods[] = {
    {"pairs", pairs, METH_VARARGS, "pairs(...): see capture.traces.crossnode.pairs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture.traces._pairs",
                                    "The cross-node linker's pairing of one connection, in C.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__pairs(void)
{
    return PyModule_Create(&module);
}
