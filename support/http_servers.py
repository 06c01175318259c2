"""Real HTTP servers on free loopback ports for live capture tests."""
from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

from support import nginx
from support.ports import free_port
from support.process import process

# A stdlib HTTP/1.1 server: /status/<code> answers that code, anything else 200 with a body.
PY_SERVER = textwrap.dedent('''
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def _answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n: self.rfile.read(n)
            code = int(self.path.split("/status/")[1].split("?")[0]) if "/status/" in self.path else 200
            body = b"hello from python\\n" * (1 + ("big" in self.path) * 500)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_POST = do_PUT = do_DELETE = _answer
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')


@contextmanager
def python_server():
    port = free_port()
    with process([sys.executable, "-c", PY_SERVER, str(port)], port) as proc:
        yield port, proc


@contextmanager
def nginx_server(http2: bool = False):
    """nginx on loopback; `http2`: HTTP/2 in cleartext with prior knowledge (h2c), no HTTP/1."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="guardian-nginx-") as d:
        os.chmod(d, 0o755)
        Path(d, "html").mkdir()
        Path(d, "html", "index.html").write_text("<h1>hello from nginx</h1>\n" * 20)
        Path(d, "html", "big.html").write_text("<p>a page of 3 KiB</p>\n" + "x" * 3000 + "\n")
        conf = Path(d, "nginx.conf")
        conf.write_text(nginx.conf(d, [f"listen 127.0.0.1:{port}{' http2' if http2 else ''};\n"
                                       f"        root {d}/html;\n"
                                       "        location = /fail { return 503; }\n"
                                       "        location = /missing { return 404; }\n"
                                       f"        {nginx.API_ECHO}"]))
        with process([nginx.binary(), "-c", str(conf), "-p", d], port) as proc:
            yield port, proc


UVICORN_APP = textwrap.dedent('''
    from fastapi import FastAPI, Response
    app = FastAPI()
    @app.get("/items/{item_id}")
    def item(item_id: int, q: str = ""):
        return {"id": item_id, "q": q}
    @app.get("/boom")
    def boom():
        return Response("down", status_code=500)
''')


@contextmanager
def uvicorn_server():
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="guardian-uvicorn-") as d:
        Path(d, "app.py").write_text(UVICORN_APP)
        cmd = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
        with process(cmd, port, cwd=d) as proc:
            yield port, proc
