"""Agent configuration: a YAML (or JSON) file, then GUARDIAN_* environment variables on top.

Sections here: store, linker, export, k8s, capture, log. The same file may hold the API's
sections (api, slack, schedule: guardian/api/settings.py reads those). Env vars are
GUARDIAN_<SECTION>_<KEY> (e.g. GUARDIAN_EXPORT_OTLP_ENDPOINT, GUARDIAN_STORE_MAX_SPANS);
the standard OTEL_EXPORTER_OTLP_{ENDPOINT,HEADERS,PROTOCOL} apply when ours are unset.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class StoreConfig:
    path: str | None = None  # None: in memory
    max_age_s: float | None = 24 * 3600.0
    max_spans: int | None = 5_000_000


@dataclass
class LinkerConfig:
    window_s: float = 5.0  # how long a span waits for its peer and parent
    slack_ms: float = 50.0  # clock slack when matching a CLIENT with its SERVER


@dataclass
class ExportConfig:
    otlp_endpoint: str | None = None  # None: no export
    otlp_protocol: str = "grpc"  # grpc | http
    otlp_headers: dict[str, str] = field(default_factory=dict)
    otlp_insecure: bool = True  # gRPC without TLS (collectors on the node / in the cluster)
    timeout_s: float = 10.0
    metrics: bool = True  # RED metrics over OTLP too
    metrics_interval_s: float = 30.0
    queue_size: int = 64  # span batches waiting for the exporter; beyond it batches are dropped
    queue_dir: str | None = None  # set: ship through an on-disk queue with retries (cluster agents)
    queue_max_bytes: int = 1 << 30  # the on-disk queue's bound


@dataclass
class K8sConfig:
    enabled: str = "auto"  # auto (when KUBERNETES_SERVICE_HOST or a kubeconfig exists) | true | false
    kubeconfig: str | None = None
    node_name: str | None = None  # default: NODE_NAME, else the host name


@dataclass
class CaptureConfig:
    options: dict[str, Any] = field(default_factory=dict)  # passed to capture.live.LiveCapture
    scope: dict[str, Any] = field(default_factory=dict)  # {netns|cgroup, node_name}: capture.scope


@dataclass
class LogConfig:
    format: str = "json"  # json | text
    level: str = "INFO"


@dataclass
class AgentConfig:
    store: StoreConfig = field(default_factory=StoreConfig)
    linker: LinkerConfig = field(default_factory=LinkerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    k8s: K8sConfig = field(default_factory=K8sConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    log: LogConfig = field(default_factory=LogConfig)


def _coerce(value: Any, annotation: str) -> Any:
    """Env strings (and YAML scalars) to the field's type; "" and "none" clear optional fields."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("", "none", "null") and "None" in annotation:
        return None
    if "dict" in annotation:
        return parse_headers(value)
    if "bool" in annotation:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if "int" in annotation and "float" not in annotation:
        return int(value)
    if "float" in annotation:
        return float(value)
    return value


def parse_headers(text: str) -> dict[str, str]:
    """"k1=v1,k2=v2" (the OTEL_EXPORTER_OTLP_HEADERS format) to a dict."""
    out = {}
    for item in text.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _apply(section: Any, values: Mapping[str, Any], where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(fields)})")
        f = fields[key]
        setattr(section, key, _coerce(value, str(f.type)))


def load_config(path: str | os.PathLike | None = None,
                env: Mapping[str, str] | None = None) -> AgentConfig:
    """Defaults, then the file's sections, then env vars. Raises ValueError on unknown keys."""
    env = os.environ if env is None else env
    cfg = AgentConfig()
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections")
        for name, values in data.items():
            if name in sections and values:
                _apply(sections[name], values, f"{path}: {name}")
    for otel, key in (("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
                      ("OTEL_EXPORTER_OTLP_HEADERS", "otlp_headers"),
                      ("OTEL_EXPORTER_OTLP_PROTOCOL", "otlp_protocol")):
        if env.get(otel) and f"GUARDIAN_EXPORT_{key.upper()}" not in env:
            value = env[otel]
            if key == "otlp_protocol":
                value = "http" if value.startswith("http") else "grpc"
            _apply(cfg.export, {key: value}, otel)
    for name, section in sections.items():
        prefix = f"GUARDIAN_{name.upper()}_"
        for f in dataclasses.fields(section):
            var = prefix + f.name.upper()
            if var in env:
                _apply(section, {f.name: env[var]}, var)
    return cfg
