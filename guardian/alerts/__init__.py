"""Alert-driven investigations: Alertmanager and generic (PagerDuty/Opsgenie-style) webhooks."""
