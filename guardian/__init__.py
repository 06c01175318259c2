"""Guardian: the AI SRE over the captured spans (agent, API, Slack, CLI)."""
__version__ = "0.1.0"
