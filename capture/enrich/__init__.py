"""Who sent a span: process, container, systemd unit and Kubernetes pod identity."""
