"""Scheduled anomaly reports: interval or cron, posted to Slack and/or a webhook, history kept."""
