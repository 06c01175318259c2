"""Traffic sources other than live eBPF (recorded captures)."""
