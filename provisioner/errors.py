"""The two kinds of failure: user errors (bad input, with a location) and internal errors (bugs).

User errors are expected and end with exit code 1 and a sentence an administrator or operator
understands; internal errors end with exit code 3, a short message and the details in a log.
Keeping them apart is what lets the CLI promise "never a bare traceback" without ever hiding a
bug behind a friendly message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.diagnostics import Location


class ProvisionerError(Exception):
    """Base of every user-facing error; `location` names the file (and line) at fault."""

    code = "error"

    def __init__(self, message: str, *, location: Location | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"


class DeclarationError(ProvisionerError):
    """A declaration or the set of declarations cannot be used."""

    code = "declaration"


class SettingsError(ProvisionerError):
    """The host settings file, a flag or an environment variable is wrong."""

    code = "settings"


class GitError(ProvisionerError):
    """A Git revision or work tree the user named cannot be read."""

    code = "git"


class PlanError(ProvisionerError):
    """A saved plan cannot be applied (stale, corrupt, for another host)."""

    code = "plan"


class LockError(ProvisionerError):
    """Another run holds the host lock."""

    code = "lock"


class ApplyError(ProvisionerError):
    """Applying failed; the previous files were restored."""

    code = "apply"


class RemovalGuardError(ProvisionerError):
    """A plan removes more channels than the mass-removal guard allows; nothing was applied."""

    code = "removal-guard"

    def __init__(self, message: str, *, removals: int, threshold: int) -> None:
        super().__init__(message)
        self.removals = removals
        self.threshold = threshold


class CodedProblem(Exception):
    """A refused input found by a parser (a key entry, a certificate file).

    ``code`` is a stable kebab-case diagnostic code, ``message`` a sentence for an
    administrator; the caller knows the location and turns it into a diagnostic.
    """

    def __init__(self, code: str, message: str) -> None:
        # Both go to Exception so that the exception pickles and copies like any other.
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class InternalError(Exception):
    """A bug or an unexpected environment failure: never a user's fault."""
