"""The one exception type that reaches the user as a clean message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: a config key, a data folder, a checkpoint. Exit code 2."""
