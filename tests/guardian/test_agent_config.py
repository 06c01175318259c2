"""Agent configuration: defaults, YAML file, GUARDIAN_* env on top, OTEL_* fallbacks, errors."""
from __future__ import annotations

import pytest

from capture.config import load_config


def test_defaults_without_file_or_env():
    cfg = load_config(None, env={})
    assert cfg.store.path is None and cfg.store.max_spans == 5_000_000
    assert cfg.export.otlp_endpoint is None and cfg.linker.window_s == 5.0
    assert cfg.k8s.enabled == "auto" and cfg.log.format == "json"


def test_file_then_env(tmp_path):
    f = tmp_path / "agent.yaml"
    f.write_text("store:\n  path: /var/lib/guardian/spans.duckdb\n  max_age_s: 3600\n"
                 "export:\n  otlp_endpoint: collector:4317\n  otlp_headers: {x-team: sre}\n"
                 "capture:\n  options: {port: 8080}\napi:\n  port: 9000\n")
    cfg = load_config(f, env={"GUARDIAN_STORE_MAX_SPANS": "1000", "GUARDIAN_EXPORT_OTLP_PROTOCOL": "http",
                              "GUARDIAN_STORE_MAX_AGE_S": "none", "GUARDIAN_EXPORT_METRICS": "false",
                              "GUARDIAN_LINKER_WINDOW_S": "2.5"})
    assert cfg.store.path == "/var/lib/guardian/spans.duckdb"
    assert cfg.store.max_spans == 1000 and cfg.store.max_age_s is None
    assert cfg.export.otlp_endpoint == "collector:4317" and cfg.export.otlp_protocol == "http"
    assert cfg.export.otlp_headers == {"x-team": "sre"} and cfg.export.metrics is False
    assert cfg.linker.window_s == 2.5 and cfg.capture.options == {"port": 8080}


def test_otel_env_applies_when_ours_is_unset():
    cfg = load_config(None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318",
                                 "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                 "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret,x-a=b"})
    assert (cfg.export.otlp_endpoint, cfg.export.otlp_protocol) == ("http://otel:4318", "http")
    assert cfg.export.otlp_headers == {"api-key": "s3cret", "x-a": "b"}
    ours = load_config(None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "a:1", "GUARDIAN_EXPORT_OTLP_ENDPOINT": "b:2"})
    assert ours.export.otlp_endpoint == "b:2"


def test_errors_name_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("linker:\n  windw_s: 3\n")
    with pytest.raises(ValueError, match="windw_s"):
        load_config(f, env={})
    with pytest.raises(ValueError):
        load_config(None, env={"GUARDIAN_STORE_MAX_SPANS": "lots"})
