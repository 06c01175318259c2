"""`guardian agent` (replayed spans) shipping through its on-disk queue to a hub that rejects
batches: the agent keeps capturing and storing, keeps the batches, says so in /metrics, and
ships them all once the hub accepts."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from capture.export.otlp_proto import decode
from support.agent_proc import AgentProcess
from tests.guardian.test_agent import write_replay


class FlakyHub:
    """OTLP/HTTP that answers 400 (a rejection, not retryable by the spec) until `accept` is set."""

    def __init__(self) -> None:
        self.accept = threading.Event()
        self.span_ids: set[str] = set()
        self.rejected = 0
        hub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                import gzip

                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if hub.accept.is_set():
                    hub.span_ids.update(s.span_id for s in decode(body)[0])
                    code = 200
                else:
                    hub.rejected += 1
                    code = 400
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_agent_keeps_rejected_batches_and_ships_them_later(tmp_path):
    replay = tmp_path / "spans.jsonl"
    write_replay(replay, 100)
    hub = FlakyHub()
    config = tmp_path / "agent.yaml"
    config.write_text(f"linker:\n  window_s: 0.3\nexport:\n  otlp_endpoint: http://127.0.0.1:{hub.port}\n"
                      f"  otlp_protocol: http\n  metrics: false\n  queue_dir: {tmp_path / 'q'}\n")
    agent = AgentProcess("--config", str(config), "--replay", str(replay))
    try:
        assert agent.wait_metric("guardian_agent_spans_stored_total", 300) == 300  # capture goes on
        assert agent.wait_metric("guardian_agent_export_rejecting", 1) == 1
        assert agent.wait_metric("guardian_agent_export_queue_spans", 300) == 300
        # the oldest batch is retried first: later ones wait behind it, all kept
        assert agent.wait_metric("guardian_agent_export_rejected_spans_total", 1) >= 1
        assert agent.metric("guardian_agent_export_spans_total") == 0 and hub.rejected >= 1
        hub.accept.set()
        assert agent.wait_metric("guardian_agent_export_spans_total", 300) == 300
        assert agent.metric("guardian_agent_export_queue_spans") == 0
        assert agent.metric("guardian_agent_export_rejecting") == 0
        assert len(hub.span_ids) == 300
    finally:
        agent.stop()
        hub.close()
