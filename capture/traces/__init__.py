"""Spans to traces without header injection: cross-process and in-process parent links."""
