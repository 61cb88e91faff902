"""`python -m orchestration ...`: demo, history, webhook and tick, beside the code location."""
