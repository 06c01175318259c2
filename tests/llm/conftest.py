"""A real local model server (make setup-llm) for the llm-marked tests, one per session.

Skipped where the model is not installed, except in CI (CI=true), where that is a failure.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from guardian.llm.models import is_installed
from guardian.llm.server import LocalServer

MODEL = os.environ.get("GUARDIAN_TEST_LOCAL_MODEL", "0.5b")  # the CI default: the fastest


@pytest.fixture(scope="session")
def local_server(tmp_path_factory):
    missing = [what for what, ok in (("xllamacpp", importlib.util.find_spec("xllamacpp") is not None),
                                     (f"model {MODEL}", is_installed(MODEL))) if not ok]
    if missing:
        msg = f"{', '.join(missing)} not installed: run make setup-llm"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    server = LocalServer(MODEL, log_path=tmp_path_factory.mktemp("llm") / "server.log")
    server.start()
    yield server
    server.stop()
