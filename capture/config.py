"""The configuration model's capture sections (store, linker, export, k8s, capture, log) and its one loader.

guardian/config.py adds the api, slack, schedule and llm sections to the same model; docs/configuration.md
lists every key. Order: defaults, the YAML (or JSON) file, environment variables, then the caller's
overrides. Unknown keys are errors naming their full path (`linker.windw_s: unknown key ...`).
Environment: GUARDIAN_<SECTION>__<KEY> (two underscores between levels, e.g. GUARDIAN_STORE__MAX_SPANS,
GUARDIAN_CAPTURE__OPTIONS__PORT); the names older releases read are still honoured (LEGACY_ENV), and the
standard OTEL_EXPORTER_OTLP_{ENDPOINT,HEADERS,PROTOCOL} apply when ours are unset.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from capture import scrub
ENV_PREFIX = "GUARDIAN_"
ENV_SEP = "__"


class ConfigError(ValueError):
    """A configuration that cannot be used; one line per problem, each naming the key's path."""


class Section(BaseModel):
    """A part of the configuration: unknown keys are errors, assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreConfig(Section):
    path: str | None = None  # None: in memory
    max_age_s: float | None = 24 * 3600.0
    max_spans: int | None = 5_000_000
    # DuckDB's own memory (its default is 80 % of the host's RAM; past the limit it spills to disk)
    # and query threads (its default is one per core): an agent shares the node with what it watches.
    # A store file's buffer pool is emptied of what the file holds every 30 s (it would otherwise
    # cache blocks up to the limit, a rise of the agent's resident set for as long as that takes at
    # its rate); an in-memory store's pool is its data, up to the limit, then spilled. What DuckDB
    # frees past a quarter of the limit goes back to the system (capture/store/duckdb_store.py):
    # `python -m bench.soak_live` samples duckdb_memory() beside the agent's resident set
    memory_limit_mb: int | None = Field(64, ge=16)  # None: DuckDB's default
    threads: int | None = Field(2, ge=1)  # None: DuckDB's default
    # spans waiting to be linked and stored; past it a batch is dropped and counted
    # (guardian_agent_spans_dropped): each one is a Python object, so this bounds the agent under a flood
    queue_spans: int = Field(16_384, ge=1)
    # and in bytes (about: a few rows per batch are weighed): a span's text is up to the capture's
    # payload prefix, so spans alone do not bound it (guardian_agent_ingest_queue_refused_bytes)
    queue_mb: int = Field(32, ge=1)


class LinkerConfig(Section):
    window_s: float = 5.0  # how long a span waits for its peer and parent
    slack_ms: float = 50.0  # clock slack when matching a CLIENT with its SERVER
    # spans waiting for their peers (and half as many released ones kept to link late peers to);
    # past it the oldest quarter goes early (counted): what the agent holds under a flood, whatever
    # the window. 30,000 (rows waiting, and the context as link facts: tests/capture/traces/
    # test_linker_context.py) holds a span 1.1 s or more at
    # 20,000 spans/s (hey at 10k req/s), the whole window up to 4,500 spans/s
    max_pending_spans: int = Field(30_000, ge=100)


def parse_headers(text: str) -> dict[str, str]:
    """"k1=v1,k2=v2" (the OTEL_EXPORTER_OTLP_HEADERS format) to a dict."""
    out = {}
    for item in text.split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class ExportConfig(Section):
    otlp_endpoint: str | None = None  # None: no export
    otlp_protocol: typing.Literal["grpc", "http"] = "grpc"
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    otlp_insecure: bool = True  # gRPC without TLS (collectors on the node / in the cluster)
    timeout_s: float = 10.0
    metrics: bool = True  # RED metrics over OTLP too
    metrics_interval_s: float = 30.0
    queue_size: int = 64  # span batches waiting for the exporter; beyond it batches are dropped
    queue_dir: str | None = None  # set: ship through an on-disk queue with retries (cluster agents)
    queue_max_bytes: int = 1 << 30  # the on-disk queue's bound

    @field_validator("otlp_headers", mode="before")
    @classmethod
    def _headers_from_text(cls, v: Any) -> Any:
        return parse_headers(v) if isinstance(v, str) else v


class K8sConfig(Section):
    enabled: str | bool = "auto"  # auto (when KUBERNETES_SERVICE_HOST or a kubeconfig exists) | true | false
    kubeconfig: str | None = None
    node_name: str | None = None  # default: NODE_NAME, else the host name


def _capture_options_model() -> type[BaseModel]:
    """The keys of capture.live.CaptureOptions as a strict model, read from the dataclass so they never drift."""
    from capture.live import CaptureOptions

    hints = typing.get_type_hints(CaptureOptions)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(CaptureOptions)}
    return create_model("CaptureOptionsModel", __config__=ConfigDict(extra="forbid"), **fields)


class CaptureConfig(Section):
    options: dict[str, Any] = Field(default_factory=dict)  # keys of capture.live.CaptureOptions
    scope: dict[str, Any] = Field(default_factory=dict)  # {netns|cgroup, node_name}: capture.scope

    @field_validator("options")
    @classmethod
    def _known_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        model = _capture_options_model()
        try:
            return model.model_validate(v).model_dump(include=set(v))
        except ValidationError as e:
            raise ValueError("; ".join(describe_error(err, model) for err in e.errors())) from None

    def live_options(self):
        """These options as the capture.live.CaptureOptions the live capture takes (checked at load)."""
        from capture.live import CaptureOptions

        return CaptureOptions(**self.options)


class LogConfig(Section):
    format: typing.Literal["json", "text"] = "json"
    level: str = "INFO"
    # a debug mode, off by default (it slows every allocation): `guardian agent` traces Python's
    # allocations with this many frames and SIGUSR2 logs what grew since the last SIGUSR2 by line
    # and object type (guardian/memtrace.py)
    memory_trace_frames: int = Field(0, ge=0, le=64)


class ScrubSection(Section):
    """Secrets out of captured text (capture/scrub.py): on by default."""

    enabled: bool = True
    credential_keys: list[str] = Field(default_factory=lambda: list(scrub.CREDENTIAL_KEYS))

    def apply(self) -> None:
        """Make this the process-wide scrubbing rule."""
        scrub.configure(scrub.ScrubConfig(self.enabled, list(self.credential_keys)))


class AgentConfig(Section):
    """What the capture daemon needs: guardian/config.py's GuardianConfig is this plus the API's sections."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    linker: LinkerConfig = Field(default_factory=LinkerConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    k8s: K8sConfig = Field(default_factory=K8sConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    scrub: ScrubSection = Field(default_factory=ScrubSection)


# The names older releases read: the rule GUARDIAN_<SECTION>_<KEY> (one underscore) for these sections.
LEGACY_ENV: dict[str, tuple[str, ...]] = {
    f"GUARDIAN_{section.upper()}_{key.upper()}": (section, key)
    for section, model in (("store", StoreConfig), ("linker", LinkerConfig), ("export", ExportConfig),
                           ("k8s", K8sConfig), ("capture", CaptureConfig), ("log", LogConfig))
    for key in model.model_fields
}
OTEL_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT": "otlp_endpoint", "OTEL_EXPORTER_OTLP_HEADERS": "otlp_headers",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "otlp_protocol"}

M = TypeVar("M", bound=BaseModel)


def path_text(loc: Iterable[Any]) -> str:
    """('schedule', 'reports', 0, 'cron') -> 'schedule.reports[0].cron'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def field_at(model: type[BaseModel], loc: Iterable[Any]) -> tuple[type[BaseModel] | None, Any]:
    """(the model holding the last key of loc, that key's annotation), following nested models and lists."""
    holder: type[BaseModel] | None = model
    annotation: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        holder = _inner_model(annotation)
        if holder is None or part not in holder.model_fields:
            return holder, None
        annotation = holder.model_fields[part].annotation
    return holder, annotation


def describe_error(err: Mapping[str, Any], model: type[BaseModel], origins: Mapping[tuple, str] | None = None) -> str:
    loc = tuple(err["loc"])
    where = path_text(loc)
    source = (origins or {}).get(tuple(p for p in loc if not isinstance(p, int)))
    if source:
        where += f" (from {source})"
    if err["type"] == "extra_forbidden":
        holder = _inner_model(field_at(model, loc[:-1])[1])
        known = ", ".join(holder.model_fields) if holder is not None else ""
        return f"{where}: unknown key {loc[-1]!r}" + (f" (known: {known})" if known else "")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}"


def _optional(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation) or (
        isinstance(annotation, types.UnionType) and type(None) in annotation.__args__)


def _set(data: dict, path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[path[-1]] = value


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return data


def env_values(model: type[BaseModel], env: Mapping[str, str], legacy: Mapping[str, tuple[str, ...]],
               strict_sections: bool) -> list[tuple[tuple[str, ...], str, str]]:
    """(path, value, variable) for each variable that sets a key: OTEL fallbacks, legacy names, then the rule."""
    found: list[tuple[tuple[str, ...], str, str]] = []
    if "export" in model.model_fields:
        for var, key in OTEL_ENV.items():
            ours = (f"GUARDIAN_EXPORT_{key.upper()}", f"GUARDIAN_EXPORT{ENV_SEP}{key.upper()}")
            if env.get(var) and not any(o in env for o in ours):
                value = env[var]
                if key == "otlp_protocol":
                    value = "http" if value.startswith("http") else "grpc"
                found.append((("export", key), value, var))
    for var, path in legacy.items():
        if var in env and path[0] in model.model_fields:
            found.append((path, env[var], var))
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or ENV_SEP not in var:
            continue
        path = tuple(p.lower() for p in var[len(ENV_PREFIX):].split(ENV_SEP))
        if path[0] not in model.model_fields:
            if strict_sections:
                raise ConfigError(f"{var}: unknown section {path[0]!r} (known: {', '.join(model.model_fields)})")
            continue
        found.append((path, env[var], var))
    return found


def load_model(model: type[M], path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
               overrides: Mapping[str, Mapping[str, Any]] | None = None,
               legacy: Mapping[str, tuple[str, ...]] = LEGACY_ENV, only_own_sections: bool = False) -> M:
    """The one loader: defaults, file, env, overrides -> a validated `model`; ConfigError naming each bad key.

    only_own_sections: read just this model's sections from the file (a part of the full model loading a
    file written for the whole); the full model rejects unknown sections."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path:
        data = read_file(path)
        if only_own_sections:
            data = {k: v for k, v in data.items() if k in model.model_fields}
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items() if v is not None}
    origins: dict[tuple, str] = {}
    for key_path, value, var in env_values(model, env, legacy, strict_sections=not only_own_sections):
        if value.strip().lower() in ("", "none", "null"):
            if not _optional(field_at(model, key_path)[1]):
                continue  # an empty variable leaves a required key at its file or default value
            value = None
        _set(data, key_path, value)
        origins[key_path] = var
    for section, values in (overrides or {}).items():
        for key, value in (values or {}).items():
            if value is not None:
                _set(data, (section, key), value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [describe_error(err, model, origins) for err in e.errors()]
        where = f"{path}: " if path else ""
        raise ConfigError(where + ("\n  ".join(lines) if len(lines) > 1 else lines[0])) from None


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """The capture sections only (a file written for the whole model is fine); guardian.config.load reads all."""
    return load_model(AgentConfig, path, env, only_own_sections=True)
