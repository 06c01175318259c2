"""Guardian's spans against an independent decoder (tshark) on the same recorded traffic.

The pcaps next to this file were taken with tcpdump while real clients worked against real
servers (record.py). Per connection, tshark's view of the exchanges (commands, completion tags,
error codes) must equal what Guardian's spans say; every known difference is a documented
decision in docs/protocol-truth.md and is named here.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from tests.captures.truth.oracle import HERE, as_list as _list, guardian_spans, server_port, tshark


# -- Redis ---------------------------------------------------------------------------------
def redis_oracle(pcap: Path):
    port = server_port(pcap)
    frames = json.loads(tshark("-r", str(pcap), "-d", f"tcp.port=={port},resp", "-Y", "resp", "-T", "json",
                               "--no-duplicate-keys", "-J", "tcp resp"))
    commands: dict[str, Counter] = defaultdict(Counter)
    errors: dict[str, Counter] = defaultdict(Counter)
    for f in frames:
        layers = f["_source"]["layers"]
        tcp = layers["tcp"]
        client = tcp["tcp.dstport"] == port
        conn = tcp["tcp.srcport"] if client else tcp["tcp.dstport"]
        for pdu in _list(layers["resp"]):
            if not isinstance(pdu, dict):
                continue
            # tshark 4.0 re-reports a command on each TCP segment it spans: count it where it starts
            if client and tcp.get("tcp.payload", "").startswith("2a"):
                for arr in _list(pdu.get("resp.array", [])):
                    bulk = _list(arr.get("resp.bulk_string", []))
                    if bulk:
                        name = bytes.fromhex(bulk[0]["resp.bulk_string.value"].replace(":", "")).decode()
                        commands[conn][name.upper()] += 1
            elif not client:
                for e in _list(pdu.get("resp.error", [])):
                    errors[conn][e] += 1
    return commands, errors


def test_redis_commands_and_errors_match_tshark():
    pcap = HERE / "redis" / "redis-py.pcap"
    commands, errors = redis_oracle(pcap)
    spans = guardian_spans(pcap)
    assert set(commands) == set(spans)
    for conn, want in commands.items():
        mine = spans[conn]
        got = Counter(s.attributes["db.operation.name"].split(" ")[0] for s in mine if s.kind != "CONSUMER")
        assert got == want, conn
        got_errors = Counter(s.status_message for s in mine if s.status_code == "ERROR")
        assert got_errors == errors.get(conn, Counter()), conn
    # documented: a pub/sub push is a CONSUMER span of its own (tshark shows it as a server array)
    assert sum(s.kind == "CONSUMER" for ss in spans.values() for s in ss) == 1
    # nil replies (a missed GET, BLPOP timing out) are answers, not errors
    blpop = [s for ss in spans.values() for s in ss if s.name == "BLPOP"]
    assert blpop and blpop[0].status_code != "ERROR"


# -- PostgreSQL ----------------------------------------------------------------------------
def postgres_oracle(pcap: Path) -> dict[str, list[str]]:
    """client port -> the outcome of each exchange in order: a CommandComplete tag or E:<SQLSTATE>."""
    port = server_port(pcap)
    rows = tshark("-r", str(pcap), "-d", f"tcp.port=={port},pgsql", "-Y", f"pgsql && tcp.srcport=={port}",
                  "-T", "fields", "-e", "tcp.dstport", "-e", "pgsql.type", "-e", "pgsql.tag", "-e", "pgsql.code",
                  "-E", "occurrence=a", "-E", "aggregator=|")
    out: dict[str, list[str]] = defaultdict(list)
    for line in rows.splitlines():
        conn, types, tags, codes = (line.split("\t") + ["", "", ""])[:4]
        tags, codes = iter(tags.split("|")), iter(codes.split("|"))
        for t in types.split("|"):
            if t == "Command completion":
                out[conn].append(next(tags))
            elif t == "Error":
                out[conn].append("E:" + next(codes))
    return out


def _outcome(span) -> str:
    a = span.attributes
    if span.status_code == "ERROR":
        return "E:" + a.get("db.response.status_code", "")
    return a["db.operation.name"]


def _tag_outcome(tag: str) -> str:
    return tag if tag.startswith("E:") else tag.split(" ")[0]


def test_postgres_exchanges_match_tshark():
    pcap = HERE / "postgresql" / "psycopg.pcap"
    oracle = postgres_oracle(pcap)
    spans = guardian_spans(pcap)
    assert oracle and set(oracle) == set(spans)
    for conn, tags in oracle.items():
        mine = spans[conn]
        assert [_outcome(s) for s in mine] == [_tag_outcome(t) for t in tags], conn
        for s, tag in zip(mine, tags):
            last = tag.rsplit(" ", 1)[-1]
            if not tag.startswith("E:") and last.isdigit() and tag.split(" ")[0] in ("SELECT", "INSERT", "COPY"):
                assert s.attributes.get("db.response.returned_rows") == int(last), (conn, tag)


# -- MySQL / MariaDB -----------------------------------------------------------------------
_MYSQL_COMMANDS = {"3": "QUERY", "14": "PING", "2": "INIT_DB", "22": "STMT_PREPARE", "23": "STMT_EXECUTE"}


def mysql_oracle(pcap: Path) -> dict[str, list[tuple[str, str, str]]]:
    """client port -> (command, statement, error code or "") of each command that gets a response."""
    port = server_port(pcap)
    rows = tshark("-r", str(pcap), "-d", f"tcp.port=={port},mysql", "-Y", "mysql", "-T", "fields",
                  "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "mysql.command", "-e", "mysql.query",
                  "-e", "mysql.error_code", "-E", "occurrence=f")
    out: dict[str, list[list[str]]] = defaultdict(list)
    for line in rows.splitlines():
        src, dst, cmd, query, err = (line.split("\t") + [""] * 5)[:5]
        if dst == port and cmd and cmd != "1":  # QUIT gets no response
            out[src].append([_MYSQL_COMMANDS.get(cmd, cmd), query, ""])
        elif src == port and err and out[dst]:
            out[dst][-1][2] = err
    return {k: [tuple(x) for x in v] for k, v in out.items()}


def test_mysql_commands_statements_and_errors_match_tshark():
    pcap = HERE / "mysql" / "pymysql.pcap"
    oracle = mysql_oracle(pcap)
    spans = guardian_spans(pcap)
    assert oracle and set(oracle) == set(spans)
    for conn, want in oracle.items():
        got = [(s.attributes["mysql.command"], s.attributes.get("db.query.text", ""),
                s.attributes.get("db.response.status_code", "") if s.status_code == "ERROR" else "")
               for s in spans[conn]]
        assert got == want, conn
    assert any(e == "1062" for v in oracle.values() for _, _, e in v)  # the duplicate key is in the recording
