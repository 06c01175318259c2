"""The embedded span store (DuckDB) behind the narrow API in api.py."""
