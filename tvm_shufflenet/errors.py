"""The base of every error caused by bad input: the CLI prints these as one line, without a traceback."""


class UserError(Exception):
    """Bad input (unknown model or target, wrong file, wrong shape): the message says what to do."""
