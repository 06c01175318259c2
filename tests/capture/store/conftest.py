"""Every store test runs on DuckDB and on ClickHouse's engine (chDB)."""
import pytest

from tests.engines import engine  # noqa: F401 - the fixture, made autouse below


@pytest.fixture(autouse=True)
def _both_engines(engine):  # noqa: F811
    return engine
