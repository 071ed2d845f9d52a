"""Errors the CLI prints as one line, without a traceback, and the exit code each one means."""


class UserError(Exception):
    """Bad input (unknown model or target, wrong file, wrong shape): the message says what to do. Exit code 2."""

    exit_code = 2


class SystemFailure(UserError):
    """The system failed, not the input (a board lost mid-run, a compile that crashed). Exit code 1."""

    exit_code = 1
