"""Real servers on free loopback ports for the live capture tests: one per test module.

The servers themselves live in support/servers.py (shared with bench/).
"""
from __future__ import annotations

import pytest

from support.servers import (PG_BIN, SECRET, etcd_instance, grpc_instance, mariadb_instance,  # noqa: F401
                             memcached_instance, nats_instance, postgres_instance, redis_instance)


@pytest.fixture(scope="module")
def redis_server():
    with redis_instance() as server:
        yield server


@pytest.fixture(scope="module")
def memcached_server():
    with memcached_instance() as server:
        yield server


@pytest.fixture(scope="module")
def nats_server():
    with nats_instance() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server():
    with postgres_instance() as server:
        yield server


@pytest.fixture(scope="module")
def mariadb_server():
    with mariadb_instance() as server:
        yield server


@pytest.fixture(scope="module")
def etcd_server():
    with etcd_instance() as server:
        yield server


@pytest.fixture(scope="module")
def grpc_server():
    with grpc_instance() as server:
        yield server
