"""Secrets out of captured text: the one scrubbing step between parser records and spans.

Rule 1: it runs where a Record becomes a Span (capture/stitch.py), for live and pcap capture
        alike, so every sink (store, OTLP, API, reports, LLM) sees scrubbed text only.
Rule 2: it removes values, never structure: the operation, table, key and URL path stay so
        spans still group and explain. HTTP uses OpenTelemetry's "REDACTED"; query languages "?".
Rule 3: on by default; `configure()` turns it off or changes which keys count as credentials.
It does not read bodies or headers: parsers never keep those (see each protocol module). Other SQL
literals stay (db.query.text keeps WHERE values: they explain slow queries); only credentials go.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

REDACTED = "REDACTED"
# query/URL keys whose values are credentials: a key matches when it contains one of these
CREDENTIAL_KEYS = ("token", "password", "passwd", "pwd", "secret", "api_key", "apikey", "api-key", "auth",
                   "sig", "signature", "credential", "session", "jwt", "private_key", "access_key")


@dataclass
class ScrubConfig:
    enabled: bool = True
    credential_keys: list[str] = field(default_factory=lambda: list(CREDENTIAL_KEYS))


_config = ScrubConfig()


def enabled() -> bool:
    """Whether scrubbing is on (read at each span: configure() may change it)."""
    return _config.enabled


def configure(config: ScrubConfig) -> None:
    """Set the process-wide rule (from the agent's configuration)."""
    global _config
    _config = config


# -- HTTP ---------------------------------------------------------------------------------
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def url(text: str) -> str:
    """A full URL without its userinfo ("https://REDACTED:REDACTED@host/...")."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}:{REDACTED}@", text)


def query(text: str, keys: Iterable[str] | None = None) -> str:
    """A query string with the values of credential-like keys replaced."""
    keys = tuple(k.lower() for k in (keys if keys is not None else _config.credential_keys))
    parts = text.split("&")
    for i, part in enumerate(parts):
        name, eq, _value = part.partition("=")
        if eq and any(k in name.lower() for k in keys):
            parts[i] = f"{name}={REDACTED}"
    return "&".join(parts)


# -- SQL / CQL ----------------------------------------------------------------------------
_LITERAL = r"(?:'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|\$(\w*)\$.*?(?:\$\1\$|$))"
_SQL_SECRET = re.compile(
    r"(\bPASSWORD\b(?:\s+FOR\s+\S+)?\s*(?:=\s*)?(?:PASSWORD\s*\(\s*)?"
    r"|\bIDENTIFIED\s+(?:WITH\s+\S+\s+)?(?:BY|AS)\s+(?:PASSWORD\s+)?)"
    r"(?P<lit>" + _LITERAL + ")", re.I | re.S)


def sql(text: str) -> str:
    """SQL/CQL with every literal that follows PASSWORD or IDENTIFIED BY replaced by '?'."""
    if "assword" not in text and "ASSWORD" not in text and "dentified" not in text.lower():
        return text
    return _SQL_SECRET.sub(lambda m: m.group(1) + "'?'", text)


_ECHOED = re.compile(r"((?:Duplicate entry|Incorrect \w+ value:?|value)\s+)'(?:[^']|'')*'", re.I)


def sql_error(message: str) -> str:
    """A server error message without the row values it echoes (MySQL "Duplicate entry '...'")."""
    return _ECHOED.sub(lambda m: m.group(1) + "'?'", message)


# -- Redis --------------------------------------------------------------------------------
# command -> leading arguments kept (keys, fields, counts); everything after is a value
_REDIS_KEEP = {
    "SET": 1, "SETNX": 1, "SETEX": 2, "PSETEX": 2, "GETSET": 1, "APPEND": 1, "SETRANGE": 2, "MSET": 0,
    "MSETNX": 0, "HSET": 2, "HSETNX": 2, "HMSET": 2, "LPUSH": 1, "RPUSH": 1, "LPUSHX": 1, "RPUSHX": 1,
    "LSET": 2, "LINSERT": 2, "LREM": 2, "LPOS": 1, "SADD": 1, "SREM": 1, "SISMEMBER": 1, "SMISMEMBER": 1,
    "SMOVE": 2, "ZADD": 1, "ZREM": 1, "ZSCORE": 1, "ZINCRBY": 2, "PFADD": 1, "PUBLISH": 1, "SPUBLISH": 1,
    "XADD": 2, "GEOADD": 1, "EVAL": 1, "EVALSHA": 1, "FCALL": 1, "AUTH": 0, "HELLO": 1, "MIGRATE": 0,
    "ACL SETUSER": 1, "CONFIG SET": 1, "SENTINEL SET": 1, "SENTINEL CONFIG": 1, "CLIENT SETNAME": 0,
}
_REDIS_TWO_WORD = {"ACL", "CONFIG", "SENTINEL", "CLIENT"}


def redis_kept(name: str) -> int | None:
    """How many words of a Redis command line whose first word is `name` (upper case) redis()
    keeps before a "?" stands for the rest: None when it keeps them all, -1 when the second word
    decides (ACL SETUSER, CONFIG SET ...). The compiled path (capture/_fastpath.c) asks it once per
    command name and cuts the line where redis() would."""
    if name in _REDIS_TWO_WORD:
        return -1
    keep = _REDIS_KEEP.get(name)
    return None if keep is None else keep + 1


def redis(text: str) -> str:
    """A Redis command line with its value arguments replaced: "SET k ?", "ACL SETUSER u ?"."""
    words = text.split(" ")
    name = words[0].upper()
    kept = redis_kept(name)
    if kept == -1:
        two = f"{name} {words[1].upper()}" if len(words) > 1 else ""
        kept = 2 + _REDIS_KEEP[two] if two in _REDIS_KEEP else None
    if kept is None or len(words) <= kept:
        return text
    return " ".join(words[:kept]) + " ?"


# -- command lines ------------------------------------------------------------------------
# Short options whose value is a password, per program: `redis-cli -a pw`, `mysql -ppw`. Short
# letters mean different things to different programs (`-p` is redis-cli's port), so only these.
_SHORT_SECRET = {"redis-cli": "-a", "redis-benchmark": "-a", "keydb-cli": "-a", "valkey-cli": "-a",
                 "mysql": "-p", "mysqldump": "-p", "mysqladmin": "-p", "mariadb": "-p", "mycli": "-p",
                 "sshpass": "-p"}
_URL_IN_ARG = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")


def _secret_name(name: str, keys: tuple[str, ...]) -> bool:
    name = name.lower().lstrip("-")
    return not name.startswith("no-") and (name.endswith("pass") or any(k in name for k in keys))


def command_line(argv: list[str], keys: Iterable[str] | None = None) -> list[str]:
    """A process's arguments without the credentials people pass on command lines: the value of
    `--password pw`, `--requirepass=pw`, `password=pw` (conninfo, env assignments), a program's
    own password flag (`redis-cli -a pw`, `mysql -ppw`) and URL userinfo. Option names stay."""
    keys = tuple(k.lower() for k in (keys if keys is not None else _config.credential_keys))
    short = _SHORT_SECRET.get(argv[0].rsplit("/", 1)[-1]) if argv else None
    out = list(argv)
    i = 1
    while i < len(out):
        arg = out[i]
        if short and arg.startswith(short) and not arg.startswith("--"):
            if arg == short:
                if short != "-p" and i + 1 < len(out):  # `mysql -p` alone asks for the password
                    out[i + 1] = REDACTED
                    i += 1
            else:
                out[i] = short + REDACTED
        elif arg.startswith("--") and _secret_name(arg.partition("=")[0], keys):
            if "=" in arg:
                out[i] = arg.partition("=")[0] + "=" + REDACTED
            elif i + 1 < len(out) and not out[i + 1].startswith("-"):
                out[i + 1] = REDACTED
                i += 1
        else:
            words = arg.split(" ")  # one argument may be a whole conninfo: "host=h password=pw"
            for j, word in enumerate(words):
                name, eq, _ = word.partition("=")
                if eq and not name.startswith("-") and _secret_name(name, keys):
                    words[j] = f"{name}={REDACTED}"
            out[i] = _URL_IN_ARG.sub(lambda m: f"{m.group(1)}{REDACTED}:{REDACTED}@", " ".join(words))
        i += 1
    return out


# -- the step -----------------------------------------------------------------------------
_SQL_SYSTEMS = {"postgresql", "mysql", "mariadb", "cassandra", "clickhouse", "mssql", "oracle"}


def may_change(system: str) -> bool:
    """False when record() leaves the attributes and message of this db.system as they are
    (records without url.* keys): the compiled path then does not call it."""
    return system == "redis" or system in _SQL_SYSTEMS


def record(attrs: dict, status_message: str) -> str:
    """Scrub a record's attributes in place; returns its status message, scrubbed too."""
    if not _config.enabled:
        return status_message
    for key in ("url.full", "url.path"):
        v = attrs.get(key)
        if isinstance(v, str) and "@" in v:
            v = attrs[key] = url(v)
        if isinstance(v, str) and "?" in v:  # a query left inside the URL (absolute form, importers)
            base, _, rest = v.partition("?")
            attrs[key] = f"{base}?{query(rest)}"
    v = attrs.get("url.query")
    if isinstance(v, str) and "=" in v:
        attrs["url.query"] = query(v)
    system = attrs.get("db.system")
    if system is None:
        return status_message
    text = attrs.get("db.query.text")
    if system == "redis":
        if isinstance(text, str):
            attrs["db.query.text"] = redis(text)
    elif system in _SQL_SYSTEMS:
        if isinstance(text, str):
            attrs["db.query.text"] = sql(text)
        if status_message:
            status_message = sql(sql_error(status_message))
    return status_message
