"""Investigations and their outcomes in a small SQLite table (a file created 0600, or in memory).

One row per investigation: what was asked, over which window and services, the report, the
symptoms it showed (kinds and services), and what people said: right or wrong, and the real
cause. Does not rank anything (guardian.memory.prior) and holds no spans, only reports.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from guardian.api.files import make_private

OUTCOMES = ("right", "wrong")
MAX_ROWS = 5000  # oldest unconfirmed rows go first past this

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
  id TEXT PRIMARY KEY,
  created_at REAL NOT NULL,
  source TEXT NOT NULL,
  question TEXT NOT NULL,
  window_start_ns INTEGER, window_end_ns INTEGER,
  services TEXT NOT NULL,          -- JSON list: services the report and the alert named
  symptoms TEXT NOT NULL,          -- JSON list: "kind:service" pairs the report showed
  top_service TEXT, top_operation TEXT, top_kind TEXT,
  summary TEXT NOT NULL,
  report TEXT NOT NULL,            -- the report's JSON
  outcome TEXT,                    -- NULL (not marked) | right | wrong
  cause_service TEXT, cause_operation TEXT, cause_kind TEXT, note TEXT,
  marked_by TEXT, marked_at REAL
)"""


def _host(name: str | None) -> str:
    host, _, port = (name or "").strip().lower().rpartition(":")
    return host if host and port.isdigit() else (name or "").strip().lower()


def symptoms_of(report: Any, extra_services: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(services, symptoms) of a report: who it named, and kind:service pairs (causes and anomalies)."""
    services: list[str] = []
    symptoms: list[str] = []

    def add(lst: list[str], v: str) -> None:
        if v and v not in lst:
            lst.append(v)

    for s in extra_services or []:
        add(services, _host(s))
    for rc in getattr(report, "root_causes", []) or []:
        add(services, _host(rc.service))
        add(symptoms, f"{rc.kind}:{_host(rc.service)}")
    for a in getattr(report, "anomalies", []) or []:
        if isinstance(a, dict) and a.get("service"):
            add(services, _host(str(a["service"])))
            add(symptoms, f"{a.get('kind') or a.get('type') or 'anomaly'}:{_host(str(a['service']))}")
    return services, symptoms


class MemoryStore:
    def __init__(self, path: str | None = None):
        self.path = path
        if path:
            make_private(path)
        self._con = sqlite3.connect(path or ":memory:", check_same_thread=False)
        self._con.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock, self._con:
            self._con.execute(_SCHEMA)
        if path:
            for p in (Path(path), Path(f"{path}-journal"), Path(f"{path}-wal")):
                if p.exists():
                    p.chmod(0o600)

    def record(self, inv_id: str, source: str, question: str, window: Any, report: Any,
               extra_services: list[str] | None = None) -> None:
        services, symptoms = symptoms_of(report, extra_services)
        top = report.root_causes[0] if report.root_causes else None
        row = (inv_id, time.time(), source, question, getattr(window, "start_ns", None),
               getattr(window, "end_ns", None), json.dumps(services), json.dumps(symptoms),
               top.service if top else None, top.operation if top else None, top.kind if top else None,
               report.summary, report.model_dump_json())
        with self._lock, self._con:
            self._con.execute("INSERT OR REPLACE INTO incidents (id, created_at, source, question, window_start_ns,"
                              " window_end_ns, services, symptoms, top_service, top_operation, top_kind, summary,"
                              " report) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            n = self._con.execute("SELECT count(*) FROM incidents").fetchone()[0]
            if n > MAX_ROWS:
                self._con.execute("DELETE FROM incidents WHERE id IN (SELECT id FROM incidents WHERE outcome IS NULL"
                                  " ORDER BY created_at LIMIT ?)", (n - MAX_ROWS,))

    def mark(self, inv_id: str, outcome: str, cause_service: str | None = None, cause_operation: str | None = None,
             cause_kind: str | None = None, note: str | None = None, by: str | None = None) -> dict | None:
        """Record what people said; 'right' without a cause confirms the report's top cause."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        with self._lock, self._con:
            row = self._con.execute("SELECT * FROM incidents WHERE id = ?", (inv_id,)).fetchone()
            if row is None:
                return None
            if outcome == "right" and not cause_service:
                cause_service, cause_operation, cause_kind = row["top_service"], row["top_operation"], row["top_kind"]
            self._con.execute("UPDATE incidents SET outcome=?, cause_service=?, cause_operation=?, cause_kind=?,"
                              " note=?, marked_by=?, marked_at=? WHERE id=?",
                              (outcome, cause_service, cause_operation, cause_kind, note, by, time.time(), inv_id))
        return self.get(inv_id)

    def get(self, inv_id: str) -> dict | None:
        with self._lock:
            row = self._con.execute("SELECT * FROM incidents WHERE id = ?", (inv_id,)).fetchone()
        return _row(row) if row else None

    def list(self, limit: int = 50, outcome: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM incidents", []
        if outcome:
            q, args = q + " WHERE outcome = ?", [outcome]
        with self._lock:
            rows = self._con.execute(q + " ORDER BY created_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def similar(self, services: list[str], symptoms: list[str], exclude: str | None = None,
                limit: int = 5) -> list[dict]:
        """Marked past incidents sharing services or symptoms, most alike first (Jaccard on both)."""
        want_s, want_y = {_host(s) for s in services}, set(symptoms)
        with self._lock:
            rows = self._con.execute("SELECT * FROM incidents WHERE outcome IS NOT NULL AND cause_service IS NOT NULL"
                                     " ORDER BY created_at DESC LIMIT 1000").fetchall()
        scored = []
        for r in rows:
            if r["id"] == exclude:
                continue
            s, y = set(json.loads(r["services"])), set(json.loads(r["symptoms"]))
            score = 0.5 * _jaccard(want_s, s) + 0.5 * _jaccard(want_y, y)
            if score > 0:
                scored.append((score, r))
        scored.sort(key=lambda t: (-t[0], -t[1]["created_at"]))
        return [{**_brief(r), "similarity": round(sc, 3)} for sc, r in scored[:limit]]

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _brief(r: sqlite3.Row) -> dict:
    return {"id": r["id"], "created_at": r["created_at"], "question": r["question"], "outcome": r["outcome"],
            "reported": {"service": r["top_service"], "operation": r["top_operation"], "kind": r["top_kind"]},
            "cause": {"service": r["cause_service"], "operation": r["cause_operation"], "kind": r["cause_kind"],
                      "note": r["note"]}}


def _row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["services"], d["symptoms"] = json.loads(d["services"]), json.loads(d["symptoms"])
    d["report"] = json.loads(d["report"])
    return d
