"""The soak's parts: load generators, hostile input, measurements (bench/soak.py runs them)."""
