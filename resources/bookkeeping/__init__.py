"""Stagecoach's own tables: the delivery ledger, run history, webhook request ids."""
