"""Real TLS programs for the live tests: certificates, the Go target, nginx, node and asyncio servers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from support import nginx
from support.process import process

GO_SRC = Path(__file__).with_name("tls_go")

NODE_SERVER = """
const https = require('https'), fs = require('fs');
const [cert, key, port] = process.argv.slice(1);
https.createServer({cert: fs.readFileSync(cert), key: fs.readFileSync(key)}, (req, res) => {
  res.writeHead(req.url.endsWith('/missing') ? 404 : 200, {'Content-Type': 'text/plain'});
  res.end('node tls ' + req.url + '\\n');
}).listen(+port, '127.0.0.1');
"""

NODE_CLIENT = """
const https = require('https');
const [port, prefix, n] = process.argv.slice(1);
const agent = new https.Agent({keepAlive: true, maxSockets: 1});
(async () => {
  for (let i = 0; i < +n; i++) {
    await new Promise((ok, fail) => https.get({host: '127.0.0.1', port: +port, path: prefix + i, agent,
      rejectUnauthorized: false}, (res) => { res.resume(); res.on('end', ok); }).on('error', fail));
  }
  agent.destroy();
})();
"""

ASYNCIO_SERVER = """
import asyncio, ssl, sys
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def handle(reader, writer):
    while True:
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        path = head.split(b" ")[1]
        body = b"asyncio tls " + path + b"\\n"
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        await writer.drain()
async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda r, w: handle(r, w), "127.0.0.1", port, ssl=ctx)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def wait_for_log(cap, text: str, timeout: float = 180.0) -> None:
    """Wait until a live capture (support.live) has logged `text`, e.g. "probes on <file>"."""
    deadline = time.monotonic() + timeout
    while text not in cap.err_path.read_text():
        assert time.monotonic() < deadline, f"not in the capture log after {timeout}s: {text}"
        time.sleep(0.1)


def make_certs(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def build_go(out: Path, strip: bool = False, pie: bool = False, external: bool = False) -> Path:
    """Build tests/capture/tls/go with Debian's Go, offline.

    strip: no .symtab, no DWARF; external: linked by gcc (cgo), as C-using programs are.
    """
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "gocache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "1" if external else "0", "GOPROXY": "off"}
    ldflags = ["-s -w"] * strip + ["-linkmode=external"] * external
    cmd = (["go", "build", "-o", str(out)] + ([f"-ldflags={' '.join(ldflags)}"] if ldflags else [])
           + (["-buildmode=pie"] if pie else []) + ["."])
    subprocess.run(cmd, cwd=GO_SRC, env=env, check=True, capture_output=True, timeout=240)
    return out


@contextmanager
def go_server(binary: Path, port: int, cert: Path, key: Path):
    with process([str(binary), "server", "-addr", f"127.0.0.1:{port}", "-cert", str(cert),
                  "-key", str(key)], port) as proc:
        yield proc


@contextmanager
def nginx_tls(port: int, cert: Path, key: Path, workdir: Path):
    d = workdir / f"nginx-{port}"
    d.mkdir(exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(nginx.conf(d, [f"listen 127.0.0.1:{port} ssl;\n"
                                   f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
                                   "        location = /missing { return 404; }\n"
                                   '        location / { default_type text/plain; return 200 "nginx tls $request_uri\\n"; }']))
    with process([nginx.binary(), "-c", str(conf), "-p", str(d)], port) as proc:
        yield proc


@contextmanager
def node_server(port: int, cert: Path, key: Path):
    with process(["node", "-e", NODE_SERVER, str(cert), str(key), str(port)], port) as proc:
        yield proc


def node_client(port: int, prefix: str, n: int) -> None:
    subprocess.run(["node", "-e", NODE_CLIENT, str(port), prefix, str(n)], check=True, timeout=60,
                   capture_output=True)


@contextmanager
def asyncio_server(port: int, cert: Path, key: Path):
    with process([sys.executable, "-c", ASYNCIO_SERVER, str(cert), str(key), str(port)], port) as proc:
        yield proc


def curl(port: int, path: str) -> str:
    out = subprocess.run(["curl", "-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}",
                          f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=30)
    return out.stdout


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str], **kw) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=180, **kw)


@contextmanager
def postgres_tls(port: int, cert: Path, key: Path):
    """A private PostgreSQL with ssl=on (trust auth over TCP); yields its process."""
    d = Path(tempfile.mkdtemp(prefix="guardian-pgtls-"))  # the postgres user must reach it
    shutil.chown(d, "postgres")
    try:
        with _postgres(d, port, cert, key) as proc:
            yield proc
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def _postgres(d: Path, port: int, cert: Path, key: Path):
    for src in (cert, key):  # postgres insists on owning a 0600 key
        shutil.copy(src, d / src.name)
        shutil.chown(d / src.name, "postgres")
        os.chmod(d / src.name, 0o600)
    _as_postgres([str(PG_BIN / "initdb"), "-D", str(d / "data"), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=trust", "-E", "UTF8"])
    cmd = ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(d / "data"), "-p", str(port),
           "-k", str(d), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=on",
           "-c", f"ssl_cert_file={d / cert.name}", "-c", f"ssl_key_file={d / key.name}"]
    with process(cmd, port, cwd=d) as proc:
        for _ in range(100):
            if subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        yield proc
