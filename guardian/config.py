"""The whole configuration model: capture/config.py's sections plus api, slack, schedule and llm; one loader.

`guardian --config FILE` (or $GUARDIAN_CONFIG) names the file; every command reads it through `load()`
and hands each part only its section. docs/configuration.md lists every key and variable (a test checks it).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from capture.config import LEGACY_ENV as CAPTURE_LEGACY_ENV
from capture.config import AgentConfig, ConfigError, load_model
from guardian.api.settings import Settings
from guardian.llm.config import LLMConfig

__all__ = ["ConfigError", "GuardianConfig", "LEGACY_ENV", "load"]


class GuardianConfig(AgentConfig, Settings):
    """Sections: store, linker, export, k8s, capture, log, scrub (capture/config.py), api, slack, schedule,
    alerts, memory (guardian/api/settings.py), llm (guardian/llm/config.py)."""

    llm: LLMConfig = Field(default_factory=LLMConfig)


SECTIONS = ("store", "linker", "export", "k8s", "capture", "log", "scrub", "api", "slack", "schedule", "alerts", "memory",
            "llm")

# Names older releases read, each still honoured (GUARDIAN_<SECTION>__<KEY> is the rule for new ones).
LEGACY_ENV: dict[str, tuple[str, ...]] = {
    **CAPTURE_LEGACY_ENV,
    "GUARDIAN_API_TOKEN": ("api", "token"),
    "SLACK_SIGNING_SECRET": ("slack", "signing_secret"),
    "SLACK_BOT_TOKEN": ("slack", "bot_token"),
    "SLACK_API_URL": ("slack", "api_url"),
    "GUARDIAN_SCHEDULE_INTERVAL": ("schedule", "interval_s"),
    "GUARDIAN_SCHEDULE_CRON": ("schedule", "cron"),
    "GUARDIAN_SCHEDULE_WINDOW": ("schedule", "window"),
    "GUARDIAN_SCHEDULE_SLACK_CHANNEL": ("schedule", "slack_channel"),
    "GUARDIAN_SCHEDULE_WEBHOOK_URL": ("schedule", "webhook_url"),
    "GUARDIAN_SCHEDULE_HISTORY": ("schedule", "history_path"),
    "GUARDIAN_SCHEDULE_INVESTIGATE": ("schedule", "investigate"),
    "GUARDIAN_ALERTS_SLACK_CHANNEL": ("alerts", "slack_channel"),
    "GUARDIAN_ALERTS_WEBHOOK_URL": ("alerts", "webhook_url"),
    "GUARDIAN_MEMORY_PATH": ("memory", "path"),
    "GUARDIAN_LLM": ("llm", "provider"),
    "GUARDIAN_LLM_BASE_URL": ("llm", "base_url"),
    "GUARDIAN_LLM_MODEL": ("llm", "model"),
    "GUARDIAN_LLM_API_KEY": ("llm", "api_key"),
    "GUARDIAN_LLM_TIMEOUT": ("llm", "timeout_s"),
    "GUARDIAN_LLM_MAX_STEPS": ("llm", "max_steps"),
    "GUARDIAN_LLM_PORT": ("llm", "local_port"),
}


def config_path(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return str(path) if path else (env.get("GUARDIAN_CONFIG") or None)


def load(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Mapping[str, Any]] | None = None) -> GuardianConfig:
    """Defaults, the file (`path`, else $GUARDIAN_CONFIG), env vars, then overrides ({section: {key: value}},
    None values ignored). Raises ConfigError (a ValueError) naming each bad key's path."""
    env = os.environ if env is None else env
    return load_model(GuardianConfig, config_path(path, env), env, overrides, legacy=LEGACY_ENV)


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    text = text or str(annotation).replace("typing.", "").replace("NoneType", "None")
    return text.replace(" | ", " or ")  # a bar would split the markdown table's cell


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key path, type, default, environment variables) for every key of the model, in model order."""
    import dataclasses
    import typing

    from capture.live import CaptureOptions

    legacy_by_path: dict[tuple[str, ...], list[str]] = {}
    for var, path in LEGACY_ENV.items():
        legacy_by_path.setdefault(path, []).append(var)
    rows = []
    for section in SECTIONS:
        model = GuardianConfig.model_fields[section].annotation
        for key, f in model.model_fields.items():
            if (section, key) == ("capture", "options"):
                hints = typing.get_type_hints(CaptureOptions)
                for opt in dataclasses.fields(CaptureOptions):
                    rows.append((f"capture.options.{opt.name}", _type_text(hints[opt.name]), repr(opt.default),
                                 f"GUARDIAN_CAPTURE__OPTIONS__{opt.name.upper()}"))
                continue
            default = f.default_factory() if f.default_factory is not None else f.default
            env = [f"GUARDIAN_{section.upper()}__{key.upper()}"] + sorted(legacy_by_path.get((section, key), []))
            rows.append((f"{section}.{key}", _type_text(f.annotation), repr(default), ", ".join(env)))
    return rows


def reference_markdown() -> str:
    lines = ["| key | type | default | environment |", "|---|---|---|---|"]
    lines += [f"| `{k}` | `{t}` | `{d}` | {', '.join(f'`{v}`' for v in e.split(', '))} |"
              for k, t, d, e in reference_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m guardian.config > the table in docs/configuration.md
    print(reference_markdown(), end="")
