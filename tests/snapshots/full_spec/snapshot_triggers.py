"""The snapshot spec's `python` trigger: imported at load, never called by the snapshot."""


def should_run(context: object) -> bool:
    """Never asks for a run: the snapshot only needs the callable to exist."""
    return False
