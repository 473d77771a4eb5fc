"""Versioned schema migrations of the state database.

Each migration is a function of a connection, applied in its own transaction together with
its row in ``schema_migrations``, so a crash leaves the database at a known version. Tables
are spelled out inside each migration instead of imported from :mod:`.schema`: a migration
describes the schema as it was when it was written, and must not change when the current
schema does. Never edit a released migration; append a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._db import redact_url, transaction
from .errors import StateError, StateSchemaTooNew
from .schema import UtcDateTime, schema_migrations

# Any constant works; it only has to be the same for every host sharing the database.
_PG_MIGRATION_LOCK = 0x5F7_0C0_57A7E


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    md = sa.MetaData()
    sa.Table(
        "state_meta",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("next_sender_number", sa.Integer, nullable=False),
        sa.Column("next_uid", sa.BigInteger, nullable=False),
        # One row: it carries the optimistic-concurrency version and is the row writers lock.
        sa.CheckConstraint("id = 1", name="state_meta_single_row"),
    )
    sa.Table(
        "registrations",
        md,
        sa.Column("enterprise_number", sa.String(10), primary_key=True),
        sa.Column("technical_user", sa.Text, nullable=False),
        sa.Column("sender_number", sa.Integer, nullable=False),
        sa.Column("uid", sa.BigInteger, nullable=False),
        sa.Column("registered_at", UtcDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_since", UtcDateTime, nullable=False),
        sa.Column("status_reason", sa.Text),
        sa.Column("revision", sa.Text),
        sa.Column("last_applied_at", UtcDateTime),
        # The allocator already guarantees these; the constraints are the last line of
        # defence against a second host or a hand-made import.
        sa.UniqueConstraint("technical_user", name="registrations_technical_user_key"),
        sa.UniqueConstraint("sender_number", name="registrations_sender_number_key"),
        sa.UniqueConstraint("uid", name="registrations_uid_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'failed', 'removed')", name="registrations_status"
        ),
        sa.CheckConstraint(
            "sender_number BETWEEN 0 AND 999998", name="registrations_sender_number_range"
        ),
        sa.CheckConstraint("uid > 0", name="registrations_uid_positive"),
        sa.CheckConstraint("length(enterprise_number) = 10", name="registrations_en_length"),
    )
    # No foreign key to registrations: the ledger may also hold names recorded for a quality
    # before it registers here (another channel of the same quality), and it must outlive
    # anything that might ever happen to a registration row.
    sa.Table(
        "username_ledger",
        md,
        sa.Column("technical_user", sa.Text, primary_key=True),
        sa.Column("enterprise_number", sa.String(10), nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
    )
    sa.Table(
        "runs",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("finished_at", UtcDateTime),
        sa.Column("revision", sa.Text),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.CheckConstraint("outcome IN ('ok', 'failed', 'partial')", name="runs_outcome"),
        sa.Index("runs_started_at", "started_at"),
    )
    sa.Table(
        "notifications",
        md,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("sent_at", UtcDateTime, nullable=False),
    )
    md.create_all(conn)
    conn.execute(
        sa.text(
            "INSERT INTO state_meta (id, version, next_sender_number, next_uid) VALUES (1, 0, 0, 0)"
        )
    )


def _v2_degraded_runs_and_channel_keys(conn: Connection) -> None:
    # A run that applied what it could but deferred removals, held a quality or refused a
    # file is `degraded`. The outcome's CHECK constraint is widened: PostgreSQL alters it in
    # place; SQLite cannot alter a constraint, so the table is rebuilt (ids kept).
    outcomes = "outcome IN ('ok', 'failed', 'partial', 'degraded')"
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE runs DROP CONSTRAINT runs_outcome"))
        conn.execute(sa.text(f"ALTER TABLE runs ADD CONSTRAINT runs_outcome CHECK ({outcomes})"))
    else:
        md = sa.MetaData()
        sa.Table(
            "runs_v2",
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("started_at", UtcDateTime, nullable=False),
            sa.Column("finished_at", UtcDateTime),
            sa.Column("revision", sa.Text),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("summary", sa.Text, nullable=False),
            sa.Column("error", sa.Text),
            sa.CheckConstraint(outcomes, name="runs_outcome"),
        )
        md.create_all(conn)
        conn.execute(
            sa.text(
                "INSERT INTO runs_v2 (id, started_at, finished_at, revision, outcome, summary, "
                "error) SELECT id, started_at, finished_at, revision, outcome, summary, error "
                "FROM runs"
            )
        )
        conn.execute(sa.text("DROP TABLE runs"))
        conn.execute(sa.text("ALTER TABLE runs_v2 RENAME TO runs"))
        conn.execute(sa.text("CREATE INDEX runs_started_at ON runs (started_at)"))
    # Which channel each key was applied on at the last successful apply: a key belongs to
    # the channel that had it first, and a quality that declares it later is refused.
    md = sa.MetaData()
    sa.Table(
        "channel_keys",
        md,
        sa.Column("fingerprint", sa.Text, primary_key=True),
        sa.Column("enterprise_number", sa.String(10), nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Index("channel_keys_enterprise_number", "enterprise_number"),
    )
    md.create_all(conn)


def _v3_declarations_degraded_and_hosts(conn: Connection) -> None:
    # Who declared a quality at its last successful apply (the declaration's path below the
    # root, and its Git blob or content hash): a file that is refused later, or renamed, still
    # speaks for the quality it declared. `degraded`: a channel that serves its last good
    # configuration while its declaration is refused (`failed` is kept for "never applied").
    # Per host: which host recorded a run, and which revision each host serves per channel.
    statuses = "status IN ('pending', 'active', 'degraded', 'failed', 'removed')"
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE registrations DROP CONSTRAINT registrations_status"))
        conn.execute(
            sa.text(
                f"ALTER TABLE registrations ADD CONSTRAINT registrations_status CHECK ({statuses})"
            )
        )
        conn.execute(sa.text("ALTER TABLE registrations ADD COLUMN declared_path TEXT"))
        conn.execute(sa.text("ALTER TABLE registrations ADD COLUMN declared_blob TEXT"))
    else:
        md = sa.MetaData()
        sa.Table(
            "registrations_v3",
            md,
            sa.Column("enterprise_number", sa.String(10), primary_key=True),
            sa.Column("technical_user", sa.Text, nullable=False),
            sa.Column("sender_number", sa.Integer, nullable=False),
            sa.Column("uid", sa.BigInteger, nullable=False),
            sa.Column("registered_at", UtcDateTime, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("status_since", UtcDateTime, nullable=False),
            sa.Column("status_reason", sa.Text),
            sa.Column("revision", sa.Text),
            sa.Column("last_applied_at", UtcDateTime),
            sa.Column("declared_path", sa.Text),
            sa.Column("declared_blob", sa.Text),
            sa.UniqueConstraint("technical_user", name="registrations_technical_user_key"),
            sa.UniqueConstraint("sender_number", name="registrations_sender_number_key"),
            sa.UniqueConstraint("uid", name="registrations_uid_key"),
            sa.CheckConstraint(statuses, name="registrations_status"),
            sa.CheckConstraint(
                "sender_number BETWEEN 0 AND 999998", name="registrations_sender_number_range"
            ),
            sa.CheckConstraint("uid > 0", name="registrations_uid_positive"),
            sa.CheckConstraint("length(enterprise_number) = 10", name="registrations_en_length"),
        )
        md.create_all(conn)
        conn.execute(
            sa.text(
                "INSERT INTO registrations_v3 (enterprise_number, technical_user, "
                "sender_number, uid, registered_at, status, status_since, status_reason, "
                "revision, last_applied_at) SELECT enterprise_number, technical_user, "
                "sender_number, uid, registered_at, status, status_since, status_reason, "
                "revision, last_applied_at FROM registrations"
            )
        )
        conn.execute(sa.text("DROP TABLE registrations"))
        conn.execute(sa.text("ALTER TABLE registrations_v3 RENAME TO registrations"))
    conn.execute(sa.text("ALTER TABLE runs ADD COLUMN host TEXT"))
    md = sa.MetaData()
    sa.Table(
        "host_channels",
        md,
        sa.Column("host", sa.Text, primary_key=True),
        sa.Column("enterprise_number", sa.String(10), primary_key=True),
        sa.Column("revision", sa.Text),
        sa.Column("applied_at", UtcDateTime, nullable=False),
    )
    md.create_all(conn)


def _v4_quality_identity(conn: Connection) -> None:
    # A quality is its enterprise number *and* its quality type: one enterprise may hold
    # several qualities, each with its own sender number and technical user. Rows written
    # before this migration do not know their type; they get '' ("legacy"), and the next
    # reconcile gives them the type of the declaration they belong to (model.legacy_adoptions)
    # in the same transaction as its allocation. A uid may be NULL: every quality gets a
    # sender number, only one with an SFTP channel an account. A ledger row with neither
    # enterprise number nor type is a name reserved in the portal's access system.
    owner_check = "(enterprise_number IS NULL) = (quality_type IS NULL)"
    if conn.dialect.name == "postgresql":
        for table in ("registrations", "channel_keys", "host_channels"):
            conn.execute(
                sa.text(
                    f"ALTER TABLE {table} ADD COLUMN quality_type VARCHAR(64) NOT NULL DEFAULT ''"
                )
            )
            conn.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN quality_type DROP DEFAULT"))
        conn.execute(sa.text("ALTER TABLE registrations DROP CONSTRAINT registrations_pkey"))
        conn.execute(
            sa.text(
                "ALTER TABLE registrations ADD CONSTRAINT registrations_pkey "
                "PRIMARY KEY (enterprise_number, quality_type)"
            )
        )
        conn.execute(sa.text("ALTER TABLE registrations ALTER COLUMN uid DROP NOT NULL"))
        conn.execute(sa.text("ALTER TABLE host_channels DROP CONSTRAINT host_channels_pkey"))
        conn.execute(
            sa.text(
                "ALTER TABLE host_channels ADD CONSTRAINT host_channels_pkey "
                "PRIMARY KEY (host, enterprise_number, quality_type)"
            )
        )
        conn.execute(sa.text("DROP INDEX channel_keys_enterprise_number"))
        conn.execute(
            sa.text(
                "CREATE INDEX channel_keys_quality ON channel_keys (enterprise_number, quality_type)"
            )
        )
        conn.execute(sa.text("ALTER TABLE username_ledger ADD COLUMN quality_type VARCHAR(64)"))
        conn.execute(sa.text("UPDATE username_ledger SET quality_type = ''"))
        conn.execute(
            sa.text("ALTER TABLE username_ledger ALTER COLUMN enterprise_number DROP NOT NULL")
        )
        conn.execute(
            sa.text(
                f"ALTER TABLE username_ledger ADD CONSTRAINT username_ledger_owner "
                f"CHECK ({owner_check})"
            )
        )
    else:
        statuses = "status IN ('pending', 'active', 'degraded', 'failed', 'removed')"
        md = sa.MetaData()
        sa.Table(
            "registrations_v4",
            md,
            sa.Column("enterprise_number", sa.String(10), primary_key=True),
            sa.Column("quality_type", sa.String(64), primary_key=True),
            sa.Column("technical_user", sa.Text, nullable=False),
            sa.Column("sender_number", sa.Integer, nullable=False),
            sa.Column("uid", sa.BigInteger),
            sa.Column("registered_at", UtcDateTime, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("status_since", UtcDateTime, nullable=False),
            sa.Column("status_reason", sa.Text),
            sa.Column("revision", sa.Text),
            sa.Column("last_applied_at", UtcDateTime),
            sa.Column("declared_path", sa.Text),
            sa.Column("declared_blob", sa.Text),
            sa.UniqueConstraint("technical_user", name="registrations_technical_user_key"),
            sa.UniqueConstraint("sender_number", name="registrations_sender_number_key"),
            sa.UniqueConstraint("uid", name="registrations_uid_key"),
            sa.CheckConstraint(statuses, name="registrations_status"),
            sa.CheckConstraint(
                "sender_number BETWEEN 0 AND 999998", name="registrations_sender_number_range"
            ),
            sa.CheckConstraint("uid > 0", name="registrations_uid_positive"),
            sa.CheckConstraint("length(enterprise_number) = 10", name="registrations_en_length"),
        )
        sa.Table(
            "username_ledger_v4",
            md,
            sa.Column("technical_user", sa.Text, primary_key=True),
            sa.Column("enterprise_number", sa.String(10)),
            sa.Column("quality_type", sa.String(64)),
            sa.Column("recorded_at", UtcDateTime, nullable=False),
            sa.CheckConstraint(owner_check, name="username_ledger_owner"),
        )
        sa.Table(
            "channel_keys_v4",
            md,
            sa.Column("fingerprint", sa.Text, primary_key=True),
            sa.Column("enterprise_number", sa.String(10), nullable=False),
            sa.Column("quality_type", sa.String(64), nullable=False),
            sa.Column("recorded_at", UtcDateTime, nullable=False),
        )
        sa.Table(
            "host_channels_v4",
            md,
            sa.Column("host", sa.Text, primary_key=True),
            sa.Column("enterprise_number", sa.String(10), primary_key=True),
            sa.Column("quality_type", sa.String(64), primary_key=True),
            sa.Column("revision", sa.Text),
            sa.Column("applied_at", UtcDateTime, nullable=False),
        )
        md.create_all(conn)
        copies = {
            "registrations": "enterprise_number, technical_user, sender_number, uid, "
            "registered_at, status, status_since, status_reason, revision, last_applied_at, "
            "declared_path, declared_blob",
            "username_ledger": "technical_user, enterprise_number, recorded_at",
            "channel_keys": "fingerprint, enterprise_number, recorded_at",
            "host_channels": "host, enterprise_number, revision, applied_at",
        }
        for table, columns in copies.items():
            # Table and column names are the constants above, never input.
            copy = f"INSERT INTO {table}_v4 ({columns}, quality_type) SELECT {columns}, '' FROM {table}"  # noqa: S608
            conn.execute(sa.text(copy))
            conn.execute(sa.text(f"DROP TABLE {table}"))
            conn.execute(sa.text(f"ALTER TABLE {table}_v4 RENAME TO {table}"))
        conn.execute(
            sa.text(
                "CREATE INDEX channel_keys_quality ON channel_keys (enterprise_number, quality_type)"
            )
        )


def _v5_intake_names(conn: Connection) -> None:
    # The intake gate's names already sent (anomaly 133): an accepted set claims each of its
    # file names under this primary key, so that of two hosts sharing the database only one
    # accepts a name. set_id ties the names of one set together: a run that finishes a set
    # after a crash recognises its own claim.
    md = sa.MetaData()
    sa.Table(
        "intake_names",
        md,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("sender_number", sa.String(6), nullable=False),
        sa.Column("set_id", sa.Text, nullable=False),
        sa.Column("host", sa.Text),
        sa.Column("claimed_at", UtcDateTime, nullable=False),
        sa.Index("intake_names_set_id", "set_id"),
    )
    md.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "registrations, username ledger, runs, notifications", _v1_initial),
    Migration(
        2, "degraded run outcome, keys applied per channel", _v2_degraded_runs_and_channel_keys
    ),
    Migration(
        3,
        "declaring file per quality, degraded channels, runs and channels per host",
        _v3_declarations_degraded_and_hosts,
    ),
    Migration(
        4,
        "a quality is its enterprise number and quality type; reserved usernames; "
        "sender numbers without an account",
        _v4_quality_identity,
    ),
    Migration(5, "names the intake gate accepted (anomaly 133)", _v5_intake_names),
)
LATEST_VERSION = MIGRATIONS[-1].version


def _check_order() -> None:
    expected = list(range(1, len(MIGRATIONS) + 1))
    if [m.version for m in MIGRATIONS] != expected:
        raise RuntimeError("MIGRATIONS must be numbered 1, 2, 3, ... without gaps")


_check_order()


def _ensure_version_table(conn: Connection) -> None:
    schema_migrations.create(conn, checkfirst=True)


def _current_version(conn: Connection) -> int:
    value = conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar()
    return int(value) if value is not None else 0


def _refuse_if_too_new(current: int, engine: Engine) -> None:
    if current > LATEST_VERSION:
        raise StateSchemaTooNew(
            f"state database {redact_url(engine.url)} is at schema version {current}, but this "
            f"release knows versions up to {LATEST_VERSION}; upgrade sftp-provisioner instead "
            "of running an older release against it (the database was left untouched)"
        )


def stored_version(engine: Engine) -> int:
    """The schema version of the database, 0 if it was never migrated. Writes nothing."""
    with transaction(engine, write=False) as conn:
        if not sa.inspect(conn).has_table(schema_migrations.name):
            return 0
        return _current_version(conn)


def migrate(engine: Engine, *, now: Callable[[], datetime] | None = None) -> int:
    """Bring the database to :data:`LATEST_VERSION`; returns the version before migrating.

    Safe to run from several hosts at once: migrations run under a lock (an advisory lock on
    PostgreSQL, the write lock on SQLite) and each re-reads the version under it.
    """
    clock = now or (lambda: datetime.now(UTC))
    # Checked before any write, so that an older release never even creates a table in a
    # database a newer release owns.
    before = stored_version(engine)
    _refuse_if_too_new(before, engine)
    for migration in MIGRATIONS:
        if migration.version <= before:
            continue
        try:
            with transaction(engine, write=True) as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
                _ensure_version_table(conn)
                current = _current_version(conn)
                _refuse_if_too_new(current, engine)
                if current >= migration.version:
                    continue  # another host got there first
                if current != migration.version - 1:
                    raise StateError(
                        f"state database {redact_url(engine.url)} is at schema version {current}, "
                        f"cannot apply migration {migration.version}"
                    )
                migration.apply(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        version=migration.version,
                        description=migration.description,
                        applied_at=clock(),
                    )
                )
        except StateSchemaTooNew:
            raise
        except StateError as exc:
            # Same class, so an unreachable database stays StateUnavailable, with the
            # migration named for whoever has to repair it.
            raise type(exc)(
                f"migration {migration.version} ({migration.description}) failed and was "
                f"rolled back: {exc}"
            ) from exc
    return before
