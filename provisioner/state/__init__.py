"""State store of the reconciler: the data Git cannot hold.

Sender numbers, uids and technical users are handed out once and kept forever, together with
channel statuses, the run history and which notifications were sent. :func:`allocate` is the
pure rule book; :class:`StateStore` persists its result on SQLite or PostgreSQL.
"""

from ._db import redact_url
from .errors import (
    StaleState,
    StateConflict,
    StateError,
    StateMissing,
    StateSchemaTooNew,
    StateUnavailable,
    UnknownRegistration,
    UsernameCaseClash,
    UsernameReserved,
    UsernameTaken,
)
from .migrations import LATEST_VERSION as SCHEMA_VERSION
from .model import (
    DEFAULT_SENDER_START,
    DEFAULT_UID_RANGE,
    LEGACY_QUALITY_TYPE,
    MAX_SENDER_NUMBER,
    RESERVED_SENDER_NUMBER,
    Allocation,
    ChannelStatus,
    HostChannel,
    JSONValue,
    Refusal,
    RefusalCode,
    Registration,
    RunOutcome,
    RunRecord,
    StateSnapshot,
    adopt,
    advance,
    allocate,
    format_sender_number,
    legacy_adoptions,
)
from .store import StateStore, StatusUpdate

__all__ = [
    "DEFAULT_SENDER_START",
    "DEFAULT_UID_RANGE",
    "LEGACY_QUALITY_TYPE",
    "MAX_SENDER_NUMBER",
    "RESERVED_SENDER_NUMBER",
    "SCHEMA_VERSION",
    "Allocation",
    "ChannelStatus",
    "HostChannel",
    "JSONValue",
    "Refusal",
    "RefusalCode",
    "Registration",
    "RunOutcome",
    "RunRecord",
    "StaleState",
    "StateConflict",
    "StateError",
    "StateMissing",
    "StateSchemaTooNew",
    "StateSnapshot",
    "StateStore",
    "StateUnavailable",
    "StatusUpdate",
    "UnknownRegistration",
    "UsernameCaseClash",
    "UsernameReserved",
    "UsernameTaken",
    "adopt",
    "advance",
    "allocate",
    "format_sender_number",
    "legacy_adoptions",
    "redact_url",
]
