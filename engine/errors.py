"""The one error type every layer may raise for a mistake the user can fix.

A leaf module (imports nothing of the project), so that stages, the viewer and the command line
can all raise and catch it without importing each other. ``layertour`` prints a ``UserError`` as
one line without a traceback (``-v`` adds it) and exits with status 2. Subclasses say where the
mistake was made (``engine.cli.CliError``, ``viewer.cli.ViewerCliError``).
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in the user's arguments or files; the message names the argument or the file."""
