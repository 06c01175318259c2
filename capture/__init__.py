"""Capture: eBPF (or pcap) bytes -> protocol records -> spans -> store/export."""
