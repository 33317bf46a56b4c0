"""One exception family for bad input: the CLI prints its message as one line, never a traceback."""


class MonosemanticError(Exception):
    """Bad input or state the user can fix. The message says what is wrong and how to fix it."""


class ConfigError(MonosemanticError):
    """A config file or override is invalid."""


class DataError(MonosemanticError):
    """Input data is missing, corrupted, or inconsistent (bad shard, NaN activations, width mismatch)."""


class ArgumentError(ConfigError, ValueError):
    """A Python API argument out of its range (`top_features(k=-1)`): a ValueError to Python code,
    one line to the CLI, like a config value."""
