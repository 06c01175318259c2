"""Shared fixtures: one Go build per test session (Debian's Go, offline)."""
from __future__ import annotations

import pytest

from support import tls_targets as targets


@pytest.fixture(scope="session")
def go_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tlsgo")


@pytest.fixture(scope="session")
def go_binary(go_dir):
    return targets.build_go(go_dir / "tlstarget")


@pytest.fixture(scope="session")
def go_stripped(go_dir):
    """The same program built with -ldflags="-s -w": no .symtab, only Go's own .gopclntab."""
    return targets.build_go(go_dir / "tlstarget-stripped", strip=True)


@pytest.fixture(scope="session")
def certs(go_dir):
    return targets.make_certs(go_dir)
