"""`guardian hub`: the cluster's central Guardian. OTLP receivers (gRPC + HTTP) for every
node's agent, cross-node linking, one store (DuckDB file or ClickHouse URL), and the same
API/investigator/Slack/schedules as `guardian serve`."""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("guardian.hub")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hub", help="run the cluster hub: OTLP receivers, cross-node linking, store, API",
                       description="Receive spans from every node's agent over OTLP (gRPC and "
                                   "HTTP/protobuf), link calls across nodes, store them (DuckDB file, "
                                   "or a ClickHouse URL: clickhouse://user:pass@host:8123/db, chdb:// "
                                   "in-process) and serve the API. Without an API token the API binds "
                                   "to loopback only.")
    p.add_argument("--store", metavar="PATH|URL", help="store file or ClickHouse URL (default: in memory)")
    p.add_argument("--retention", type=float, metavar="SECONDS", help="keep spans this long (TTL)")
    p.add_argument("--otlp-host", default="0.0.0.0", help="address of the OTLP receivers (default 0.0.0.0)")
    p.add_argument("--otlp-grpc-port", type=int, default=4317, help="OTLP/gRPC port (default 4317, 0: off)")
    p.add_argument("--otlp-http-port", type=int, default=4318, help="OTLP/HTTP port (default 4318, 0: off)")
    p.add_argument("--link-window", type=float, default=5.0, metavar="SECONDS",
                   help="how long a span waits for its peer on another node (default 5)")
    p.add_argument("--host", help="API address (default 127.0.0.1, or api.host from the config)")
    p.add_argument("--port", type=int, help="API port (default 8080, or api.port from the config)")
    p.add_argument("--config", metavar="FILE", help="YAML file with api/slack/schedule sections")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from capture.store.factory import open_store
    from capture.traces.crossnode import CrossNodeLinker
    from guardian.cli.serve import api_settings, run_api
    from guardian.hub.hub import Hub, HubMetrics, tune_process

    got = api_settings(args, "hub")
    if got is None:
        return 2
    settings, host = got
    try:
        store = open_store(args.store, max_age_s=args.retention)
    except Exception as e:  # noqa: BLE001 - engine errors have no common base: say which store
        print(f"guardian hub: cannot open store {args.store}: {e}", file=sys.stderr)
        return 1
    tune_process()
    try:
        hub = Hub(store, args.otlp_host, args.otlp_grpc_port or None, args.otlp_http_port or None,
                  linker=CrossNodeLinker(window_s=args.link_window)).start()
    except (RuntimeError, OSError) as e:
        print(f"guardian hub: {e}", file=sys.stderr)
        store.close()
        return 1
    registry = CollectorRegistry()
    registry.register(HubMetrics(hub))
    try:
        log.info("hub: OTLP gRPC %s:%s, HTTP %s:%s; API on http://%s:%d; store %s", args.otlp_host,
                 hub.grpc.port if hub.grpc else "off", args.otlp_host, hub.http.port if hub.http else "off",
                 host, settings.api.port, args.store or "in memory")
        run_api(store, settings, host, registry=registry,
                ready=lambda: print("ready", file=sys.stderr, flush=True))
    finally:
        hub.stop()
        store.close()
    return 0
