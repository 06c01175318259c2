"""Which LLM the agent talks to: the `llm` section of the one configuration model (guardian/config.py).

GUARDIAN_LLM: unset/"off" = none, "local" or "local:1.5b" = the local server of
`guardian llm serve`, "openai" = OpenAI's API. GUARDIAN_LLM_BASE_URL (any
OpenAI-compatible endpoint), GUARDIAN_LLM_MODEL, GUARDIAN_LLM_API_KEY refine it.
The config file is `guardian --config FILE` / $GUARDIAN_CONFIG (or a path given by the caller).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guardian.llm.models import MODELS

DEFAULT_LOCAL_MODEL = "0.5b"
DEFAULT_LOCAL_PORT = 8765
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"

class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    provider: str | None = None  # None/off | local | local:<key> | openai | url
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = Field(300.0, gt=0)  # per request: a local model on a few busy cores reads slowly
    max_steps: int = Field(6, ge=0)  # model turns that may call tools, before the final answer
    max_tool_chars: int = Field(2500, ge=200)  # per tool result, as the model sees it
    max_tokens: int = Field(400, ge=16)  # per model turn
    temperature: float = 0.0
    tools: list[str] | None = None  # offer only these tools (default: all; a short list for local models)
    local_port: int = DEFAULT_LOCAL_PORT

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_from_text(cls, v: Any) -> Any:
        return [t.strip() for t in v.split(",") if t.strip()] if isinstance(v, str) else v

    @property
    def enabled(self) -> bool:
        p = (self.provider or "").lower()
        return bool(self.base_url) or (p not in ("", "off", "none", "0", "false", "deterministic"))

    @property
    def local_key(self) -> str | None:
        """The local model key ("0.5b"/"1.5b") when the local server is selected, else None."""
        p = (self.provider or "").lower()
        if self.base_url or not p.startswith("local"):
            return None
        key = p.partition(":")[2] or (self.model or "").lower() or DEFAULT_LOCAL_MODEL
        key = key.removeprefix("local-")
        key = next((k for k, m in MODELS.items() if m.name == key), key)  # full names work too
        if key not in MODELS:
            raise ValueError(f"unknown local model {key!r}: choose one of {', '.join(MODELS)}")
        return key

    def resolved(self) -> "LLMConfig":
        """Base URL, model and key filled in for the selected provider."""
        c = self.model_copy()
        key = self.local_key
        if key:
            c.base_url = f"http://127.0.0.1:{self.local_port}/v1"
            c.model = MODELS[key].name
            c.api_key = c.api_key or "local"  # the openai client insists on one
        elif (self.provider or "").lower() == "openai" and not self.base_url:
            c.model = c.model or OPENAI_DEFAULT_MODEL
        elif self.provider and "://" in self.provider and not self.base_url:
            c.base_url = self.provider
        c.api_key = c.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        c.model = c.model or "default"
        return c


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LLMConfig:
    """The `llm` section of the whole configuration (file: path or $GUARDIAN_CONFIG, env vars), then
    `overrides` of its keys."""
    from guardian.config import load

    return load(path, env, {"llm": overrides or {}}).llm
