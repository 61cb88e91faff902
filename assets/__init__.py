"""Typed spec models and the factories that turn them into assets, checks and jobs."""
