"""Automation steps: one module per family of kinds (sql, tables, scripts, report, deliver),
what they share (common, queries) and one registry tying each spec model to its runner
(registry.py). Job composition, run-as and cancel-retry stay in assets/automations.py."""
