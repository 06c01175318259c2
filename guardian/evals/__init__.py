"""Evaluation: fault scenarios (generated, seeded) and the runner that scores investigators."""
