"""The code location: spec loading, settings, Definitions and the CLI."""
