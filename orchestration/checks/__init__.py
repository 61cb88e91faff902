"""The spec loader's reference checkers, one per section: `check_<section>(ctx) -> [Problem]`."""
