"""Builds the capture's C loops with the machine's compiler: capture/_ring.c (the ring buffer's
per-record loops), capture/_spanjson.c (`--json` lines of span batches), capture/_http1.c (the HTTP/1 head scan), capture/_fastpath.c (HTTP/1, Redis,
Memcached and PostgreSQL exchanges from ring records to spans), capture/export/_otlp_wire.c (the
hub's OTLP decoder), capture/traces/_pairs.c (the cross-node linker's pairing) and
capture/traces/_link.c (the agent's linker), capture/_rows.c (the agent's spans as rows);
everything else
is in pyproject.toml.
Without a compiler the capture and the hub run their Python specifications.
Portable flags only: never -march=native (CPUs may advertise instructions that fault)."""
from setuptools import Extension, setup

FLAGS = ["-O2", "-std=gnu11"]
HEADERS = ["capture/json_write.h", "capture/fastpath_lines.h", "capture/http1_scan.h", "capture/resp_scan.h", "capture/fastpath_redis.h", "capture/fastpath_memcached.h",
           "capture/fastpath_postgres.h", "capture/sql_scan.h", "capture/fastpath_mysql.h",
           "bpf/types.h"]
setup(ext_modules=[Extension("capture._ring", ["capture/_ring.c"], extra_compile_args=FLAGS, optional=True),
                   Extension("capture._spanjson", ["capture/_spanjson.c"], extra_compile_args=FLAGS, optional=True,
                             depends=["capture/json_write.h"]),
                   Extension("capture._http1", ["capture/_http1.c"], extra_compile_args=FLAGS, optional=True,
                             depends=HEADERS),
                   Extension("capture._fastpath", ["capture/_fastpath.c"], include_dirs=["bpf", "capture"],
                             extra_compile_args=FLAGS, optional=True, depends=HEADERS),
                   Extension("capture.export._otlp_wire", ["capture/export/_otlp_wire.c"],
                             extra_compile_args=FLAGS, optional=True),
                   Extension("capture.traces._pairs", ["capture/traces/_pairs.c"],
                             extra_compile_args=FLAGS, optional=True),
                   Extension("capture._rows", ["capture/_rows.c"], extra_compile_args=FLAGS, optional=True,
                             depends=["capture/json_write.h"]),
                   Extension("capture.traces._link", ["capture/traces/_link.c"],
                             extra_compile_args=FLAGS, optional=True)])
