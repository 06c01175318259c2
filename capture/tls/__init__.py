"""TLS plaintext capture: find TLS libraries in processes and attach the uprobes of bpf/guardian.bpf.c."""
