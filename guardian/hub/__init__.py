"""The hub: OTLP receivers from every node's agent into one store, linked across nodes."""
