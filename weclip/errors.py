"""User-input errors: everything a user can get wrong raises one of these, with a message that names the
file or config key and the problem.

Every tool's ``main`` runs under :func:`weclip.utils.cli.run_main`, which prints such an error as one
``error: <message>`` line on stderr and exits with code 2 (argparse's convention for usage errors); with
``--debug`` or ``WECLIP_DEBUG=1`` the traceback is shown too. Anything else (an internal bug) still raises
with its traceback.

The classes also derive from the built-in exception a Python caller would expect (``ValueError``,
``FileNotFoundError``, ``KeyError`` semantics are kept where they applied), so library users can catch either.
"""

__all__ = ["UserInputError", "ConfigError", "DataError", "MissingFileError", "CheckpointError"]


class UserInputError(ValueError):
    """Base class: a problem with what the user supplied (a config value, a file, a command-line flag)."""


class ConfigError(UserInputError):
    """A config file that does not parse, an unknown key, or a value of the wrong type or range."""


class DataError(UserInputError):
    """A dataset file that is malformed: split lists, label files, images, masks, annotations."""


class MissingFileError(UserInputError, FileNotFoundError):
    """A file or folder the user named (or a config points to) does not exist."""


class CheckpointError(UserInputError):
    """A checkpoint or weights file that cannot be read or does not fit the model."""
