"""How every command reports a user's mistake: one line (``Error: ...``), exit status 1, no traceback.

Its own module so that the command modules of the subpackages can import it while ``nasnetzoo.cli``
imports them."""
from __future__ import annotations

import functools

import click

from .errors import NasNetZooError


def user_errors(fn):
    """Turn the library's user-facing errors into click's one-line error."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NasNetZooError as err:
            raise click.ClickException(str(err)) from None
    return wrapper
