"""Alert channels: where alerts are sent (Slack, Teams, Twilio, webhook, shell, mail)."""
