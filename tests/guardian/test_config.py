"""One configuration model: every section checked, errors name the key's path, one env rule, a global --config."""
from __future__ import annotations

import subprocess
import sys

import pytest

from capture.config import path_text
from guardian.config import ConfigError, GuardianConfig, load


def test_defaults_cover_every_section():
    cfg = load(None, env={})
    assert isinstance(cfg, GuardianConfig)
    assert set(GuardianConfig.model_fields) == {"store", "linker", "export", "k8s", "capture", "log", "api",
                                                "slack", "schedule", "alerts", "memory", "llm", "scrub"}
    assert cfg.api.port == 8080 and not cfg.schedule.enabled and not cfg.llm.enabled


@pytest.mark.parametrize("text, where", [
    ("schedule:\n  cronn: '0 * * * *'\n", "schedule.cronn: unknown key 'cronn'"),
    ("llm:\n  modle: 1.5b\n", "llm.modle: unknown key 'modle'"),
    ("slack:\n  token: x\n", "slack.token: unknown key 'token'"),
    ("linker:\n  windw_s: 3\n", "linker.windw_s: unknown key 'windw_s' (known: window_s, slack_ms, max_pending_spans)"),
    ("capture:\n  options: {prot: 80}\n", "capture.options: prot: unknown key 'prot'"),
    ("schedul:\n  cron: '0 * * * *'\n", "schedul: unknown key 'schedul'"),
    ("schedule:\n  cron: whenever\n", "schedule.cron: not a valid cron expression"),
    ("store:\n  max_spans: lots\n", "store.max_spans: Input should be a valid integer"),
])
def test_a_typo_in_any_section_is_an_error_naming_its_path(tmp_path, text, where):
    f = tmp_path / "guardian.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(f, env={})
    assert where in str(e.value) and str(f) in str(e.value)


def test_one_env_rule_for_every_section_and_the_old_names_still_work():
    cfg = load(None, env={"GUARDIAN_SCHEDULE__CRON": "0 9 * * 1", "GUARDIAN_LLM__MAX_STEPS": "2",
                          "GUARDIAN_STORE__MAX_SPANS": "10", "GUARDIAN_CAPTURE__OPTIONS__PORT": "8080",
                          "GUARDIAN_LLM__TOOLS": "services,anomalies", "GUARDIAN_API__PORT": "9001"})
    assert cfg.schedule.cron == "0 9 * * 1" and cfg.llm.max_steps == 2 and cfg.store.max_spans == 10
    assert cfg.capture.options == {"port": 8080} and cfg.llm.tools == ["services", "anomalies"]
    live = cfg.capture.live_options()  # what LiveCapture takes: typed, the rest at their defaults
    assert type(live).__name__ == "CaptureOptions" and live.port == 8080 and live.pid is None
    assert cfg.api.port == 9001
    old = load(None, env={"GUARDIAN_SCHEDULE_INTERVAL": "60", "GUARDIAN_LLM": "local", "SLACK_BOT_TOKEN": "xoxb",
                          "GUARDIAN_STORE_MAX_SPANS": "7", "GUARDIAN_API_TOKEN": "t"})
    assert (old.schedule.interval_s, old.llm.provider, old.slack.bot_token, old.store.max_spans,
            old.api.token) == (60, "local", "xoxb", 7, "t")


def test_env_errors_name_the_variable():
    with pytest.raises(ConfigError, match=r"store.max_spans \(from GUARDIAN_STORE__MAX_SPANS\)"):
        load(None, env={"GUARDIAN_STORE__MAX_SPANS": "lots"})
    with pytest.raises(ConfigError, match="GUARDIAN_SCHEDUL__CRON: unknown section 'schedul'"):
        load(None, env={"GUARDIAN_SCHEDUL__CRON": "0 * * * *"})


def test_order_is_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("api: {port: 1000, token: file}\nllm: {max_steps: 3}\n")
    cfg = load(None, env={"GUARDIAN_CONFIG": str(f), "GUARDIAN_API__PORT": "2000"},
               overrides={"api": {"port": None}, "llm": {"max_steps": 0}})
    assert (cfg.api.port, cfg.api.token, cfg.llm.max_steps) == (2000, "file", 0)


def test_paths_read_like_the_file():
    assert path_text(("schedule", "reports", 0, "cron")) == "schedule.reports[0].cron"


def test_global_config_flag_reaches_every_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm:\n  providr: local\n")
    for argv in (["--config", str(bad), "traces", "--help"], ["traces", "--config", str(bad), "--limit", "1"]):
        r = subprocess.run([sys.executable, "-m", "guardian.cli.main", *argv], capture_output=True, text=True,
                           timeout=60)
        if "--help" in argv:
            assert r.returncode == 0  # --help answers before any configuration is read
            continue
        assert r.returncode == 2 and "bad configuration" in r.stderr and "llm.providr" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "guardian.cli.main", "--config", str(bad), "doctor", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown key 'providr'" in r.stderr


def test_the_reference_in_docs_is_the_model():
    from pathlib import Path

    from guardian.config import SECTIONS, reference_markdown

    assert set(SECTIONS) == set(GuardianConfig.model_fields)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- generated: python -m guardian.config -->\n", 1)[1].split("<!-- end generated -->", 1)[0]
    assert table == reference_markdown(), "docs/configuration.md is stale: python -m guardian.config"


def test_scrub_section_sets_the_process_wide_rule():
    from capture import scrub

    def scrubbed() -> dict:
        attrs = {"url.full": "https://u:p@h/x?token=abc", "url.query": "token=abc"}
        scrub.record(attrs, "")
        return attrs

    try:
        load(None, env={"GUARDIAN_SCRUB__ENABLED": "false"}).scrub.apply()
        assert scrubbed() == {"url.full": "https://u:p@h/x?token=abc", "url.query": "token=abc"}
        load(None, env={}, overrides={"scrub": {"credential_keys": ["nothing"]}}).scrub.apply()
        assert scrubbed()["url.query"] == "token=abc"
        load(None, env={}).scrub.apply()
        assert "abc" not in str(scrubbed()) and "u:p" not in str(scrubbed())
    finally:
        scrub.configure(scrub.ScrubConfig())
