"""Moved to support/http_servers.py and support/process.py; kept so older imports still resolve."""
from support.http_servers import nginx_server, python_server, uvicorn_server  # noqa: F401
from support.ports import wait_port  # noqa: F401
from support.process import process  # noqa: F401
