"""Typed, read-only, bounded tools over the span store (for the investigator and LLM agent)."""
