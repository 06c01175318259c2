/* capture/protocols/sql.py's sql_summary for ASCII statements, in C (included by _fastpath.c):
 * the first keyword after blanks and comments (_KEYWORD), and the first name after FROM, INTO,
 * UPDATE, TABLE [IF [NOT] EXISTS] or JOIN within the first 2048 characters (_TABLE), as those
 * regular expressions match it. A statement with any other character is Python's: \s, \w, \b and
 * case-insensitive matching are Unicode there. */
#ifndef GUARDIAN_SQL_SCAN_H
#define GUARDIAN_SQL_SCAN_H

#define SQL_TABLE_SPAN 2048 /* sql.py: _TABLE searches query[:2048] */

/* Python's str.isspace() over ASCII: \t \n \v \f \r, \x1c-\x1f and space */
static inline int sql_space(unsigned char ch) { return ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 28 && ch <= 31); }
static inline int sql_alpha(unsigned char ch) { return (ch | 32) >= 'a' && (ch | 32) <= 'z'; }
static inline int sql_word(unsigned char ch) { return sql_alpha(ch) || (ch >= '0' && ch <= '9') || ch == '_'; }

static Py_ssize_t sql_skip_space(const unsigned char *s, Py_ssize_t n, Py_ssize_t i)
{
    while (i < n && sql_space(s[i]))
        i++;
    return i;
}

/* s[i:] starts with the upper-case keyword kw, in any case */
static int sql_kw(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, const char *kw)
{
    for (; *kw; kw++, i++)
        if (i >= n || (s[i] & ~32) != (unsigned char)*kw || !sql_alpha(s[i]))
            return 0;
    return 1;
}

/* \s+ then [\w."`]+ at s[i:]: the name's [start, end), or 0 */
static int sql_name(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, Py_ssize_t *a, Py_ssize_t *b)
{
    Py_ssize_t j = sql_skip_space(s, n, i);
    if (j == i)
        return 0;
    Py_ssize_t k = j;
    while (k < n && (sql_word(s[k]) || s[k] == '.' || s[k] == '"' || s[k] == '`'))
        k++;
    if (k == j)
        return 0;
    *a = j;
    *b = k;
    return 1;
}

/* _TABLE's first match in s[:n]: the name's [start, end), or 0 */
static int sql_table(const unsigned char *s, Py_ssize_t n, Py_ssize_t *a, Py_ssize_t *b)
{
    for (Py_ssize_t p = 0; p < n; p++) {
        if (!sql_alpha(s[p]) || (p > 0 && sql_word(s[p - 1])))
            continue; /* \b before a keyword: its first letter after a non-word character */
        switch (s[p] & ~32) {
        case 'F':
            if (sql_kw(s, n, p, "FROM") && sql_name(s, n, p + 4, a, b))
                return 1;
            break;
        case 'I':
            if (sql_kw(s, n, p, "INTO") && sql_name(s, n, p + 4, a, b))
                return 1;
            break;
        case 'U':
            if (sql_kw(s, n, p, "UPDATE") && sql_name(s, n, p + 6, a, b))
                return 1;
            break;
        case 'J':
            if (sql_kw(s, n, p, "JOIN") && sql_name(s, n, p + 4, a, b))
                return 1;
            break;
        case 'T': {
            if (!sql_kw(s, n, p, "TABLE"))
                break;
            /* (?:\s+IF\s+(?:NOT\s+)?EXISTS)? tried first, then without it */
            Py_ssize_t i = p + 5, j = sql_skip_space(s, n, i);
            if (j > i && sql_kw(s, n, j, "IF")) {
                Py_ssize_t k = sql_skip_space(s, n, j + 2);
                if (k > j + 2) {
                    if (sql_kw(s, n, k, "NOT")) {
                        Py_ssize_t m = sql_skip_space(s, n, k + 3);
                        if (m > k + 3 && sql_kw(s, n, m, "EXISTS") && sql_name(s, n, m + 6, a, b))
                            return 1;
                    } else if (sql_kw(s, n, k, "EXISTS") && sql_name(s, n, k + 6, a, b))
                        return 1;
                }
            }
            if (sql_name(s, n, i, a, b))
                return 1;
            break;
        }
        }
    }
    return 0;
}

/* (operation, collection) of an ASCII query as sql_summary makes it; NULL without an error:
 * not ASCII, or a comment not followed by a word (the caller asks Python) */
static PyObject *sql_summary_ascii(PyObject *query)
{
    if (!PyUnicode_IS_ASCII(query))
        return NULL;
    const unsigned char *s = PyUnicode_1BYTE_DATA(query);
    Py_ssize_t n = PyUnicode_GET_LENGTH(query), i = sql_skip_space(s, n, 0);
    int comments = 0;
    for (;;) { /* (?:/\*.*?\*\/\s*|--[^\n]*\n\s*)* */
        if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
            const unsigned char *end = NULL;
            for (Py_ssize_t k = i + 2; k + 1 < n; k++)
                if (s[k] == '*' && s[k + 1] == '/') {
                    end = s + k;
                    break;
                }
            if (end == NULL)
                break;
            i = sql_skip_space(s, n, end - s + 2);
            comments = 1;
        } else if (i + 1 < n && s[i] == '-' && s[i + 1] == '-') {
            const unsigned char *nl = memchr(s + i + 2, '\n', n - i - 2);
            if (nl == NULL)
                break;
            i = sql_skip_space(s, n, nl - s + 1);
        } else
            break;
    }
    Py_ssize_t k = i;
    while (k < n && sql_alpha(s[k]))
        k++;
    if (k == i && comments)
        return NULL; /* the regex would go on to try each comment ended at a later star-slash: Python's */
    char op[16] = {0};
    Py_ssize_t oplen = k - i;
    PyObject *op_o, *table_o;
    if (oplen <= (Py_ssize_t)sizeof(op)) {
        for (Py_ssize_t m = 0; m < oplen; m++)
            op[m] = (char)(s[i + m] & ~32);
        op_o = PyUnicode_FromStringAndSize(op, oplen);
    } else { /* a word too long to be one of _WITH_TABLE */
        PyObject *word = PyUnicode_Substring(query, i, k);
        op_o = word ? PyObject_CallMethod(word, "upper", NULL) : NULL;
        Py_XDECREF(word);
        oplen = 0;
    }
    if (op_o == NULL)
        return NULL;
    static const char *const with_table[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE",
                                             "DROP", "ALTER", "TRUNCATE", "COPY", NULL};
    int with = 0;
    for (int w = 0; oplen && with_table[w]; w++)
        with |= (Py_ssize_t)strlen(with_table[w]) == oplen && memcmp(op, with_table[w], oplen) == 0;
    Py_ssize_t a, b;
    if (with && sql_table(s, n < SQL_TABLE_SPAN ? n : SQL_TABLE_SPAN, &a, &b)) {
        while (a < b && (s[a] == '"' || s[a] == '`')) /* .strip('"`') */
            a++;
        while (b > a && (s[b - 1] == '"' || s[b - 1] == '`'))
            b--;
        table_o = PyUnicode_Substring(query, a, b);
    } else
        table_o = PyUnicode_FromStringAndSize("", 0);
    if (table_o == NULL) {
        Py_DECREF(op_o);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, op_o, table_o);
    Py_DECREF(op_o);
    Py_DECREF(table_o);
    return out;
}
#endif
