"""Errors a user can act on.

Every error raised for bad input is a :class:`ZooError` whose message names the
problem and the fix; the command line turns it into one line and exit status 2.
"""


class ZooError(ValueError):
    """Bad input from the user (model, guide, data, option); the message says how to fix it."""


class DataError(ZooError):
    """A data set that is missing, corrupt, mis-shaped or holds non-finite values."""


class Note(UserWarning):
    """Something the user should know that changes nothing they asked for (the command line prints one line)."""


class DivergenceError(RuntimeError):
    """The SVI loss became non-finite; ``step`` is the first step where it did."""

    def __init__(self, step, message):
        super().__init__(message)
        self.step = step


class FitFailure(RuntimeError):
    """A fit that ran but could not produce its guide (a Laplace approximation without a mode); the message
    says why and what to change."""


def first_line(error: BaseException) -> str:
    """``Type: first line of the message``: how a failure inside a user's code is quoted in a one-line error."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
