"""The lab's own service programs (one per language, configured by a topology) and helpers."""
