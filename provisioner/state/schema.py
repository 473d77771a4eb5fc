"""Tables of the current schema, for queries. Migrations carry their own frozen copies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

# SQLite has no timestamp type. A fixed-width ISO-8601 UTC text keeps the microseconds and
# sorts in time order, so ORDER BY works the same as on PostgreSQL.
_SQLITE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes: timestamptz on PostgreSQL, ISO-8601 UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> object:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"refusing to store naive datetime {value.isoformat()}")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.strftime(_SQLITE_FORMAT)
        return value

    def process_result_value(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
        elif isinstance(value, datetime):
            parsed = value
        else:
            raise TypeError(f"unexpected stored datetime {value!r}")
        if parsed.tzinfo is None:
            # Only reachable if someone wrote the table by hand; UTC is what we always write.
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)

state_meta = sa.Table(
    "state_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("next_sender_number", sa.Integer, nullable=False),
    sa.Column("next_uid", sa.BigInteger, nullable=False),
)

registrations = sa.Table(
    "registrations",
    metadata,
    sa.Column("enterprise_number", sa.String(10), primary_key=True),
    # '' for a row migrated from schema 3 that no reconcile has matched to a type yet.
    sa.Column("quality_type", sa.String(64), primary_key=True),
    sa.Column("technical_user", sa.Text, nullable=False, unique=True),
    sa.Column("sender_number", sa.Integer, nullable=False, unique=True),
    # NULL: no SFTP channel yet, so no account on this host.
    sa.Column("uid", sa.BigInteger, unique=True),
    sa.Column("registered_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_since", UtcDateTime, nullable=False),
    sa.Column("status_reason", sa.Text),
    sa.Column("revision", sa.Text),
    sa.Column("last_applied_at", UtcDateTime),
    # The file that declared the quality at its last successful apply (relative to the
    # declarations root) and its Git blob id (sha256 of the content outside Git).
    sa.Column("declared_path", sa.Text),
    sa.Column("declared_blob", sa.Text),
)

# Every technical user ever recorded, with its quality; both NULL: a name reserved in the
# portal's access system by a user that is no quality of ours.
username_ledger = sa.Table(
    "username_ledger",
    metadata,
    sa.Column("technical_user", sa.Text, primary_key=True),
    sa.Column("enterprise_number", sa.String(10)),
    sa.Column("quality_type", sa.String(64)),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("revision", sa.Text),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.Text),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("sent_at", UtcDateTime, nullable=False),
)

channel_keys = sa.Table(
    "channel_keys",
    metadata,
    sa.Column("fingerprint", sa.Text, primary_key=True),
    sa.Column("enterprise_number", sa.String(10), nullable=False),
    sa.Column("quality_type", sa.String(64), nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
)

# Which revision each host serves for each channel (several hosts may share one database).
host_channels = sa.Table(
    "host_channels",
    metadata,
    sa.Column("host", sa.Text, primary_key=True),
    sa.Column("enterprise_number", sa.String(10), primary_key=True),
    sa.Column("quality_type", sa.String(64), primary_key=True),
    sa.Column("revision", sa.Text),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)

# Names the intake gate accepted (anomaly 133: a name already sent), per set (schema v5).
intake_names = sa.Table(
    "intake_names",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("sender_number", sa.String(6), nullable=False),
    sa.Column("set_id", sa.Text, nullable=False),
    sa.Column("host", sa.Text),
    sa.Column("claimed_at", UtcDateTime, nullable=False),
)
