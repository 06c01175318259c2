"""Sans-IO protocol parsers, one module per protocol (see base.py and registry.py)."""
