"""A stand-in Python step for the snapshot spec: the snapshot only builds it, never runs it."""
