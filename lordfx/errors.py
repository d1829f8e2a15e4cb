"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class LordfxError(Exception):
    """An error the user can act on; its message is complete on one line."""

    exit_code = 1


class UsageError(LordfxError):
    """Bad arguments or options (exit code 2, like click's usage errors)."""

    exit_code = 2


class NoModelError(LordfxError):
    """A domain is known but has no trained bundle yet."""


class PluginError(LordfxError):
    """A plugin failed to load or registered a name that is already taken."""


class InputError(LordfxError):
    """An input file cannot be used; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
