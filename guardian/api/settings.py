"""The configuration sections of the HTTP API, Slack, scheduled reports, alerts and memory.

Part of the one model in guardian/config.py, which loads them (file, then env vars: see
docs/configuration.md). Nothing here opens sockets or files.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_jobs: int = Field(2, ge=1)  # concurrent investigations; the rest get 429
    engine: str = "auto"  # investigation engine: auto | deterministic | llm
    max_body_bytes: int = Field(1 << 20, ge=1024)  # refused from Content-Length before anything reads it


class SlackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    signing_secret: str | None = None
    bot_token: str | None = None
    api_url: str | None = None  # Web API base URL; None = Slack's own
    window: str | None = None  # e.g. "15m"; None = capture.store.window's default for the store


class ScheduleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    interval_s: float | None = Field(None, gt=0)
    cron: str | None = None
    window: str | None = None  # e.g. "15m"; None = capture.store.window's default for the store
    slack_channel: str | None = None
    webhook_url: str | None = None
    history_path: str | None = None  # JSON lines; None keeps history in memory only
    history_max: int = Field(500, ge=1)
    only_anomalies: bool = False  # post only when something was found (history keeps every run)
    investigate: bool = False  # when something was found, attach an investigation of the top anomaly

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        if v is not None:
            from croniter import croniter

            if not croniter.is_valid(v):
                raise ValueError(f"not a valid cron expression: {v!r}")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.interval_s or self.cron)


class GenericAlertMapping(BaseModel):
    """Where a generic (PagerDuty/Opsgenie-style) alert keeps its fields: dotted paths into the JSON.
    The defaults read PagerDuty's Events API v2; Opsgenie: fingerprint "alert.alias", status "action",
    firing ["Create"], resolved ["Close"], title "alert.message", labels "alert.details",
    starts_at "alert.createdAt"."""
    items: str | None = None  # a list of alerts inside the payload; None = the payload is one alert
    fingerprint: str = "dedup_key"
    status: str = "event_action"
    firing: list[str] = Field(default_factory=lambda: ["trigger"])
    resolved: list[str] = Field(default_factory=lambda: ["resolve"])
    title: str = "payload.summary"
    service: str | None = "payload.source"
    labels: str | None = "payload.custom_details"
    starts_at: str | None = "payload.timestamp"
    ends_at: str | None = None


class AlertsSettings(BaseModel):
    lookback: str = "5m"  # the investigation window opens this long before the alert started
    max_window: str = "15m"  # and is never longer than this
    service_labels: list[str] = Field(default_factory=lambda: [
        "service", "service_name", "app", "app_kubernetes_io_name", "k8s_app", "job", "container", "deployment"])
    slack_channel: str | None = None  # default channel for alert reports
    slack_channels: dict[str, str] = Field(default_factory=dict)  # Alertmanager receiver -> channel
    webhook_url: str | None = None  # reports also POSTed here as JSON
    dedupe_s: float = Field(3600, gt=0)  # the same firing fingerprint within this is a repeat
    max_investigations: int = Field(10, ge=1)  # at most this many alert investigations ...
    rate_window_s: float = Field(600, gt=0)  # ... per this many seconds; the rest are noted, not run
    generic: GenericAlertMapping = Field(default_factory=GenericAlertMapping)


class MemorySettings(BaseModel):
    path: str | None = None  # SQLite file of investigations and their outcomes; None = in memory
    prior_weight: float = Field(0.15, ge=0, le=1)  # how far a confirmed cause lifts a matching one


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api: ApiSettings = Field(default_factory=ApiSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)

    def bind_host(self, requested: str | None = None) -> tuple[str, str | None]:
        """The host to bind, and a warning when no token forces loopback."""
        host = requested or self.api.host
        if not self.api.token and host not in LOOPBACK_HOSTS:
            return "127.0.0.1", (
                f"no API token configured (GUARDIAN_API_TOKEN or api.token): "
                f"binding to 127.0.0.1 instead of {host}"
            )
        return host, None


def load_settings(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """The whole configuration (guardian.config.load), which is a Settings: file, env vars, then overrides."""
    from guardian.config import load

    return load(path, env, overrides)


def as_settings(config: Settings | Mapping[str, Any] | None) -> Settings:
    """Accept a Settings, a plain dict of sections, or None (env only)."""
    if isinstance(config, Settings):
        return config
    if config is None:
        return load_settings()
    return load_settings(overrides=config)
