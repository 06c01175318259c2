"""Helpers shared by tests/ and bench/: real servers on free loopback ports, live capture runs.

Not a test module: nothing here is collected by pytest, and nothing in capture/, tools/ or guardian/ imports it.
"""
