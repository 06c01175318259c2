"""guardian capture: live eBPF capture (or a recorded pcap) printed as spans."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from capture.errors import CaptureUnavailable
from capture.span import Span, write_json_lines


def register(sub) -> None:
    p = sub.add_parser("capture", help="capture requests live with eBPF and print them as spans",
                       description="Capture every request on this host with eBPF and print one span "
                                   "per request/response exchange.")
    p.add_argument("--json", action="store_true", help="one span per line as JSON (OpenTelemetry names)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--pid", type=int, help="only this process")
    p.add_argument("--port", type=int, help="only connections with this port at either end")
    p.add_argument("--cgroup", metavar="PATH",
                   help="only processes of this cgroup v2 subtree (e.g. /system.slice/nginx.service), "
                        "decided in the kernel (default: capture.options.cgroup)")
    p.add_argument("--netns", metavar="PATH",
                   help="only processes of this network namespace (e.g. /var/run/netns/blue), decided in "
                        "the kernel (default: capture.options.netns)")
    p.add_argument("--max-payload", type=int, metavar="BYTES",
                   help="bytes of each message copied from the kernel (power of two; default: "
                        "capture.options.max_payload, 4096)")
    p.add_argument("--ringbuf-pages", type=int, metavar="N",
                   help="size of the kernel-to-agent ring buffer in 4 KiB pages, a power of two "
                        "(default: capture.options.ringbuf_pages, 8192 = 32 MiB)")
    p.add_argument("--no-tls", action="store_true",
                   help="do not attach uprobes to TLS libraries (plaintext of TLS traffic is then not seen)")
    p.add_argument("--pair", action=argparse.BooleanOptionalAction,
                   help="pair request and response in the kernel for HTTP/1, Redis, Memcached, PostgreSQL "
                        "and MySQL: one ring record per exchange instead of two, same spans (default: "
                        "capture.options.pair, on; --no-pair or GUARDIAN_CAPTURE__OPTIONS__PAIR=0 turns it off)")
    p.add_argument("--stats", action="store_true", help="print capture counters as JSON on stderr at exit")
    p.add_argument("--pcap", metavar="FILE", help="replay a recorded pcap/pcapng file through the parsers "
                                                  "instead of capturing live (no eBPF; exits at the file's end)")
    p.set_defaults(func=run)


def _table_row(s: Span) -> str:
    ms = s.duration_ns / 1e6
    peer = f"{s.attributes.get('server.address', '?')}:{s.attributes.get('server.port', '?')}"
    status = s.attributes.get("http.response.status_code", s.status_code)
    t = time.strftime("%H:%M:%S", time.localtime(s.start_time_unix_nano / 1e9))
    return f"{t}  {s.kind:<6} {s.service[:18]:<18} {s.name[:48]:<48} {str(status):>5} {ms:9.2f} ms  {peer}"


def live_options(args, config):
    """The capture's options: capture.options from the configuration (its file or
    GUARDIAN_CAPTURE__OPTIONS__*), and this command's flags over them."""
    import dataclasses

    configured = config.capture.live_options()
    flags = {"pid": args.pid, "port": args.port, "max_payload": args.max_payload,
             "ringbuf_pages": args.ringbuf_pages, "pair": args.pair, "cgroup": args.cgroup,
             "netns": args.netns}
    if args.no_tls:
        flags["tls"] = False
    return dataclasses.replace(configured, **{k: v for k, v in flags.items() if v is not None})


def run(args) -> int:
    from guardian.config import load

    try:
        config = load(None)  # the file named by --config / $GUARDIAN_CONFIG, if any
        config.scrub.apply()
    except (OSError, ValueError) as e:
        print(f"guardian capture: bad configuration: {e}", file=sys.stderr)
        return 2
    if args.pcap:
        return _run_pcap(args)
    from capture.live import LiveCapture, tune_gc

    _say_loader_progress()
    try:
        cap = LiveCapture(live_options(args, config))
        cap.start()
        tune_gc()
    except (CaptureUnavailable, ValueError, OSError) as e:  # OSError: no such cgroup or namespace
        print(f"guardian capture: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.duration:
        threading.Timer(args.duration, stop.set).start()
    emit = _printer(args.json)
    if args.json:  # nothing but the printer reads the spans: the compiled path writes their lines
        cap.tracker.spans_as_lines()
    print("ready", file=sys.stderr, flush=True)
    try:
        cap.run(emit, stop)
    except BrokenPipeError:
        pass
    finally:
        stats = cap.stats()
        cap.close()
    _report(stats, as_json=args.stats)
    return 0


def _say_loader_progress() -> None:
    """A cold start compiles for a while: say so on stderr (with the loader's own words)."""
    loader_log = logging.getLogger("capture.loader")
    if not loader_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("guardian capture: %(message)s"))
        loader_log.addHandler(handler)
        loader_log.setLevel(logging.INFO)


def _printer(as_json: bool):
    """The span sink of both sources: JSON lines, or a table with its header printed now."""
    out = sys.stdout
    if not as_json:
        out.write(f"{'time':<8}  {'kind':<6} {'service':<18} {'operation':<48} {'status':>5} {'duration':>12}  server\n")

    fd = _fileno(out) if as_json else None  # JSON lines are made as bytes, written as they are

    def emit(spans: list[Span | bytes]) -> None:  # bytes: a line already (ConnTracker.spans_as_lines)
        if fd is not None:
            write_json_lines(fd, spans)
            return
        if as_json:
            out.write("".join(s.decode() if type(s) is bytes else s.to_json() + "\n" for s in spans))
        else:
            out.write("".join(_table_row(s) + "\n" for s in spans))
        out.flush()

    return emit


def _fileno(out) -> int | None:
    """The file descriptor under a text stream (what it buffered written first), or None."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None
    out.flush()
    return fd


def _run_pcap(args) -> int:
    """Recorded traffic: same parsers and output, no eBPF; --port filters flows, --pid does not apply."""
    from capture.sources.pcap import replay

    try:
        stats = replay(args.pcap, _printer(args.json), port=args.port)
    except BrokenPipeError:  # the reader went away (| head): not an error
        return 0
    except (OSError, ValueError) as e:
        print(f"guardian capture: {e}", file=sys.stderr)
        return 1
    if args.stats:
        print(json.dumps(stats, sort_keys=True), file=sys.stderr)
    else:
        print(f"capture: spans={stats.get('pipeline.spans', 0)}, flows={stats.get('pcap.flows', 0)}, "
              f"detected={stats.get('pcap.flows_detected', 0)}, gaps={stats.get('pcap.gaps', 0)}", file=sys.stderr)
    return 0


def _report(stats: dict[str, int], as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats, sort_keys=True), file=sys.stderr)
        return
    keys = ("pipeline.spans", "kernel.ringbuf_drops", "kernel.ringbuf_spilled", "kernel.truncated", "kernel.unknown_drops",
            "conntrack.gaps", "pipeline.parser_exceptions")
    print("capture: " + ", ".join(f"{k.split('.', 1)[1]}={stats.get(k, 0)}" for k in keys), file=sys.stderr)
