"""Argument types of the ``dam`` command line (each turns a bad value into one argparse error line), and its
user error."""

from __future__ import annotations

import argparse


class UserError(ValueError):
    """A command-line usage error found by a subcommand (printed as one ``dam: error:`` line)."""


def one_line(err: BaseException) -> str:
    """An error's message on one line (its type's name if it has none)."""
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def count(minimum: int, maximum: int | None = None):
    """A whole number in [minimum, maximum] (argparse type)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} must be <= {maximum}")
        return value

    return parse


def path(text: str) -> str:
    """A path argument: an empty one (an unset shell variable) would mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return text


def address(text: str) -> str:
    """HOST:PORT of process 0 (checked here: jax reports a missing port as an IndexError)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. node001:12345)")
    return text
