"""Slack: signed Events API and slash-command endpoints, answers posted in thread via the Web API."""
