"""Errors of the application layer: each is one line for the user, naming the key or the file."""


class ConfigError(ValueError):
    """A configuration problem, named by its key (or a checkpoint problem, named by its path)."""
