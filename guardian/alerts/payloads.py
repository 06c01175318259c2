"""Alert webhook payloads -> Alert records: Alertmanager's webhook JSON (version 4) and a generic
JSON with a configurable field mapping. Pure functions: no store, no network.

Every refusal is an AlertError whose text says what was wrong and where, for the 4xx answer.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

MAX_ALERTS = 500  # per payload; Alertmanager batches a group's alerts, never thousands
MAX_TEXT = 2000  # per label/annotation value kept
_FRACTION = re.compile(r"(\.\d{6})\d+")


class AlertError(ValueError):
    """A payload we can't use; the message is the reason given back to the sender."""


@dataclass
class Alert:
    fingerprint: str
    status: str  # firing | resolved
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at_ns: int | None = None
    ends_at_ns: int | None = None
    source: str = "alertmanager"
    receiver: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "status": self.status, "name": self.name,
                "labels": self.labels, "annotations": self.annotations, "starts_at_ns": self.starts_at_ns,
                "ends_at_ns": self.ends_at_ns, "source": self.source, "receiver": self.receiver}


def parse_time(value: Any, where: str) -> int | None:
    """RFC 3339 (Alertmanager sends nanoseconds; Go's zero time means 'not set') or unix seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise AlertError(f"{where}: expected a time, got {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value < 1e11:
            raise AlertError(f"{where}: unix seconds out of range: {value!r}")
        return int(value * 1e9)
    if not isinstance(value, str) or len(value) > 64:
        raise AlertError(f"{where}: expected an RFC 3339 time, got {str(value)[:64]!r}")
    if value.startswith("0001-01-01"):
        return None
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise AlertError(f"{where}: expected an RFC 3339 time, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    ns = int(dt.timestamp() * 1e9)
    if not 0 <= ns < 2**63:
        raise AlertError(f"{where}: time out of range: {value!r}")
    return ns


def _strings(obj: Any, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise AlertError(f"{where}: expected an object of strings")
    return {str(k)[:200]: (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_TEXT]
            for k, v in list(obj.items())[:100]}


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


def parse_alertmanager(payload: Any) -> list[Alert]:
    """Alertmanager's webhook body (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""
    if not isinstance(payload, dict):
        raise AlertError("expected Alertmanager's webhook JSON object (with 'version' and 'alerts')")
    version = str(payload.get("version", ""))
    if version != "4":
        raise AlertError(f"unsupported webhook version {version!r}: Alertmanager sends version \"4\"")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise AlertError("'alerts' must be a non-empty list")
    if len(alerts) > MAX_ALERTS:
        raise AlertError(f"{len(alerts)} alerts in one payload; at most {MAX_ALERTS}")
    receiver = payload.get("receiver") if isinstance(payload.get("receiver"), str) else None
    common = _strings(payload.get("commonLabels"), "commonLabels")
    out = []
    for i, a in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise AlertError(f"{where}: expected an object")
        status = a.get("status")
        if status not in ("firing", "resolved"):
            raise AlertError(f"{where}.status: expected 'firing' or 'resolved', got {status!r}")
        labels = {**common, **_strings(a.get("labels"), f"{where}.labels")}
        if "alertname" not in labels:
            raise AlertError(f"{where}.labels: no alertname")
        fp = a.get("fingerprint")
        fp = fp if isinstance(fp, str) and fp and len(fp) <= 64 else _fingerprint(labels)
        starts = parse_time(a.get("startsAt"), f"{where}.startsAt")
        if starts is None:
            raise AlertError(f"{where}.startsAt: required")
        out.append(Alert(fp, status, labels["alertname"], labels, _strings(a.get("annotations"), f"{where}.annotations"),
                         starts, parse_time(a.get("endsAt"), f"{where}.endsAt"), "alertmanager", receiver))
    return out


def dig(obj: Any, path: str | None) -> Any:
    """'payload.custom_details.service' -> the value there, or None."""
    if not path:
        return None
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def parse_generic(payload: Any, mapping) -> list[Alert]:
    """A PagerDuty/Opsgenie-style alert (or list of them, mapping.items) read through `mapping`."""
    if not isinstance(payload, (dict, list)):
        raise AlertError("expected a JSON object (or a list of alerts)")
    items = dig(payload, mapping.items) if mapping.items else payload
    items = items if isinstance(items, list) else [items]
    if not items or len(items) > MAX_ALERTS:
        raise AlertError(f"expected 1 to {MAX_ALERTS} alerts, got {len(items)}")
    out = []
    for i, item in enumerate(items):
        where = f"alert {i}" if len(items) > 1 else "alert"
        if not isinstance(item, dict):
            raise AlertError(f"{where}: expected an object")
        raw_status = dig(item, mapping.status)
        status = ("firing" if raw_status in mapping.firing else
                  "resolved" if raw_status in mapping.resolved else None)
        if status is None:
            raise AlertError(f"{where}: {mapping.status} is {raw_status!r}; expected one of "
                             f"{mapping.firing + mapping.resolved}")
        title = dig(item, mapping.title)
        if not isinstance(title, str) or not title.strip():
            raise AlertError(f"{where}: {mapping.title} (the alert's title) is missing")
        labels = _strings(dig(item, mapping.labels), f"{where}: {mapping.labels}") if mapping.labels else {}
        service = dig(item, mapping.service)
        if isinstance(service, str) and service:
            labels.setdefault("service", service[:200])
        labels.setdefault("alertname", title[:200])
        fp = dig(item, mapping.fingerprint)
        fp = str(fp)[:64] if isinstance(fp, (str, int)) and str(fp) else _fingerprint({**labels, "title": title})
        starts = parse_time(dig(item, mapping.starts_at), f"{where}: {mapping.starts_at}") if mapping.starts_at else None
        ends = parse_time(dig(item, mapping.ends_at), f"{where}: {mapping.ends_at}") if mapping.ends_at else None
        out.append(Alert(fp, status, title.strip()[:200], labels, {"summary": title[:MAX_TEXT]}, starts, ends,
                         "generic"))
    return out
