"""The base class of convkit's user errors (the bottom of the layering: it imports nothing from convkit).

Every error a user can cause (an unknown model, a malformed file, an option out of range) is a `ConvkitError`
as well as the built-in error it always was, so ``except ValueError`` keeps working and ``except
ConvkitError`` catches them all. The ``convkit`` command prints such an error as one line, ``convkit:
error: <message>``, and exits with its `exit_code`; ``convkit --debug VERB ...`` shows the traceback instead.
"""

from __future__ import annotations

__all__ = ["ConvkitError"]


class ConvkitError(Exception):
    """A user error: the message says what was wrong and what was expected.

    Subclasses also derive from the built-in error that fits (ValueError, KeyError, FileNotFoundError, ...).

    Attributes:
        exit_code: the ``convkit`` command's exit status for this error (2, as for a usage error).

    Example:
        >>> class RecipeError(ValueError, ConvkitError):
        ...     '''A recipe names an unknown ingredient.'''
        >>> err = RecipeError("unknown ingredient 'salt'; expected one of flour, water")
        >>> isinstance(err, ValueError), isinstance(err, ConvkitError), err.exit_code
        (True, True, 2)
    """

    exit_code: int = 2
