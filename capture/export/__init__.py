"""OTLP export of spans and RED metrics (opentelemetry-sdk exporters, gRPC or HTTP)."""
