"""Errors a user can act on.

Every error raised for bad input is a :class:`ZooError` whose message names the
problem and the fix; the command line turns it into one line and exit status 2.
"""


class ZooError(ValueError):
    """Bad input from the user (model, guide, data, option); the message says how to fix it."""


class DataError(ZooError):
    """A data set that is missing, corrupt, mis-shaped or holds non-finite values."""


class DivergenceError(RuntimeError):
    """The SVI loss became non-finite; ``step`` is the first step where it did."""

    def __init__(self, step, message):
        super().__init__(message)
        self.step = step
