"""Investigation: the deterministic investigator and the engine dispatcher (engine.py)."""
