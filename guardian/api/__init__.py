"""HTTP API (FastAPI): tools, investigations, anomalies, services, traces, reports, Slack."""
