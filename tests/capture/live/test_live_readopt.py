"""Live: a ring buffer far too small for pgbench at full speed drops records, and the capture
keeps making right spans in C. Each dropped record is a gap; the compiled path hands the
connection to Python there and takes it back after the next ReadyForQuery, and no query is paired
with another query's reply (every span's row count is the one its text asked for)."""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest

from capture import fastpath
from capture.live import CaptureOptions, LiveCapture
from support.live import ebpf_or_skip

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

# each transaction asks for 1 to 5 rows: a reply paired with another query shows in its row count
SCRIPT = "\\set n random(1, 5)\nSELECT * FROM generate_series(1, :n);\n"


@pytest.mark.parametrize("pair", [False, True])
def test_ring_drops_under_pgbench_keep_spans_right_and_in_c(postgres_server, tmp_path, pair):
    ebpf_or_skip()
    if fastpath._fastpath is None:
        pytest.skip("capture._fastpath not built")
    from support.servers import PG_BIN

    pg = postgres_server
    script = tmp_path / "rows.sql"
    script.write_text(SCRIPT)
    env = dict(os.environ, PGPASSWORD=pg["password"])
    cap = LiveCapture(CaptureOptions(port=pg["port"], tls=False, ringbuf_pages=16, pair=pair))
    spans: list = []
    stop = threading.Event()
    cap.start()
    try:
        runner = threading.Thread(target=cap.run, args=(spans.extend, stop))
        runner.start()
        subprocess.run([str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"],
                        "-n", "-c", "4", "-j", "2", "-T", "4", "-M", "simple", "-f", str(script), pg["dbname"]],
                       env=env, capture_output=True, timeout=120, check=True)
        time.sleep(1.0)
        stop.set()
        runner.join(60)
        stats = cap.stats()
    finally:
        stop.set()
        cap.close()
    assert stats["kernel.ringbuf_drops"] > 0 and stats["conntrack.gaps"] > 0, "no drops: nothing was tested"
    # (a query whose reply the ring lost just before its connection closed ends "closed before a response")
    queries = [s for s in spans if s.name == "SELECT generate_series" and not s.status_message]
    assert len(queries) > 1000, len(queries)
    for s in queries:
        asked = int(re.search(r"generate_series\(1, (\d)\)", s.attributes["db.query.text"]).group(1))
        assert s.attributes.get("db.response.returned_rows") == asked, s.to_dict()
    # handed back at the gaps and taken again: most spans still made in C
    assert stats.get("conntrack.fastpath_readoptions", 0) > 0, stats
    assert stats["fastpath.spans"] >= 0.5 * stats["pipeline.spans"], stats
