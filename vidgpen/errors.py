"""The errors vidgpen raises for problems a user can fix.

Every subclass of :class:`VidgpenError` carries a one-line message that says what is wrong and what to do;
the CLI prints it and exits with code 2. Anything else is a bug and keeps its traceback.
"""


class VidgpenError(Exception):
    """A problem with the user's input, files or environment (exit code 2 in the CLI)."""


class WeightsError(VidgpenError):
    """A checkpoint is missing, truncated, corrupt, foreign, or the wrong kind of GPEN file."""


class InputError(VidgpenError):
    """An input file or folder cannot be read as a video or photo."""


class OutputError(VidgpenError):
    """The output path cannot be written (exists without --overwrite, equals the input, bad container...)."""


class OptionError(VidgpenError):
    """An option value is out of range or contradicts another option."""
