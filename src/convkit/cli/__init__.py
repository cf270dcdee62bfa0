"""The ``convkit`` command line."""

from convkit.cli.main import main

__all__ = ["main"]
