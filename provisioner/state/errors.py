"""Errors raised by the state store.

Every error derives from :class:`StateError`, a user error
(:class:`~provisioner.errors.ProvisionerError`, code ``state``): the state store refused or
could not do something, and the message is a sentence for an operator that names the database
URL with its password hidden. The CLI ends such a run with exit 1 and that sentence, never
with the "bug" exit 3, whether the database failed when it was opened or in the middle of a
run. Callers still tell the kinds apart: :class:`StaleState` is retried, :class:`StateMissing`
is a host before its first apply.
"""

from __future__ import annotations

from provisioner.errors import ProvisionerError


class StateError(ProvisionerError):
    """Base class of every error the state store raises on purpose."""

    code = "state"


class StaleState(StateError):
    """The state changed since the snapshot an allocation was computed from.

    Nothing was written: take a new snapshot, allocate again and retry.
    """


class StateSchemaTooNew(StateError):
    """The database was migrated by a newer release; this release will not touch it."""


class StateUnavailable(StateError):
    """The state database cannot be reached or the URL is unusable.

    Messages name the URL with its password hidden, since they end up in logs and e-mails.
    """


class StateMissing(StateUnavailable):
    """There is no state database at the URL, and the caller asked not to create one."""


class StateConflict(StateError):
    """A write would break a rule the database itself enforces (a number or name used twice).

    Raised by :meth:`StateStore.import_registration` for conflicting imports and, as the last
    line of defence, when a unique constraint fires during a commit.
    """


class UnknownRegistration(StateError, LookupError):
    """No registration exists for the given quality."""


class UsernameTaken(StateConflict):
    """The technical user belongs to another quality (the ledger keeps it forever)."""


class UsernameCaseClash(StateConflict):
    """The technical user differs only by case from one that belongs to another quality."""


class UsernameReserved(StateConflict):
    """The technical user is reserved in the portal's access system for a non-SFTP user."""
