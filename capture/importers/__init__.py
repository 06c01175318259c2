"""Traces recorded elsewhere into spans: OTLP JSON lines and CSV with a column mapping."""
