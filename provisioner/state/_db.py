"""Engine set-up and transactions shared by the store and the migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from .errors import StateConflict, StateError, StateMissing, StateUnavailable

# Execution option read by the SQLite "begin" hook: which BEGIN to emit.
_SQLITE_BEGIN = "provisioner_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, safe for logs and error messages."""
    if isinstance(url, URL):
        parsed = url
    else:
        try:
            parsed = make_url(url)
        except Exception:
            # Unparseable, so the password's extent is unknown: hide all credentials.
            if "@" not in url:
                return url
            scheme, sep, _rest = url.partition("://")
            host = url.rpartition("@")[2]
            return f"{scheme}{sep}***@{host}" if sep else f"***@{host}"
    if parsed.host and "@" in parsed.host:
        # An unescaped "@" in the password: the parser took its tail for part of the host.
        parsed = parsed.set(host=parsed.host.rpartition("@")[2])
    if "password" in parsed.query:
        # libpq also takes the password as a query parameter.
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True)


def _secrets(url: URL) -> list[str]:
    found = [url.password or ""]
    query_password = url.query.get("password")
    found.extend([query_password] if isinstance(query_password, str) else query_password or ())
    # Very short strings would blank out unrelated words of the message; they are rare
    # enough as passwords that the trade-off favours a readable message.
    return sorted({str(value) for value in found if len(str(value)) >= 4}, key=len, reverse=True)


def describe_error(exc: BaseException, url: URL | None = None) -> str:
    """The driver's own message, without SQLAlchemy's SQL echo and documentation links.

    Drivers may quote connection parameters back (a mangled host, say); any secret of
    ``url`` found in the message is masked.
    """
    orig = getattr(exc, "orig", None)
    text = " ".join(str(orig if orig is not None else exc).split()) or type(exc).__name__
    if url is None:
        return text
    if url.host and "@" in url.host:
        # The mangled host of an unescaped "@" in the password holds its tail.
        text = text.replace(url.host, "***@" + url.host.rpartition("@")[2])
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except Exception as exc:
        raise StateUnavailable(
            f"state URL {redact_url(url)} is not a valid database URL: {exc}"
        ) from None


def _prepare_sqlite_file(parsed: URL, *, create: bool) -> None:
    database = parsed.database or ""
    shown = redact_url(parsed)
    if not database or database == ":memory:" or database.startswith("file:"):
        raise StateUnavailable(
            f"state URL {shown} must name a database file (sqlite:////absolute/path.db): "
            "the state must outlive the process"
        )
    path = Path(database)
    if not path.is_absolute():
        raise StateUnavailable(
            f"state URL {shown} has a relative path; use sqlite:////absolute/path.db so the "
            "state does not depend on the working directory"
        )
    if not create and not path.exists():
        # Looking (status) must not leave a database or a directory behind, and a mistyped
        # URL must not read as "no channels yet".
        raise StateMissing(
            f"there is no state database at {path} ({shown}): nothing has been applied with "
            "this state yet, or --state-url / --root name the wrong place"
        )
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(mode=0o700, parents=True)
            # mkdir's mode is filtered by the umask; the directory must be private anyway.
            parent.chmod(0o700)
        except OSError as exc:
            raise StateUnavailable(f"cannot create directory {parent} for {shown}: {exc}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateUnavailable(f"cannot create state database {path}: {exc}") from None
    try:
        # SQLite gives its -wal and -shm files the mode of the main file, so this covers them.
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which skips BEGIN before
        # SELECT and DDL) so that snapshots are consistent and migrations are atomic.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # WAL lets `status` read while a reconcile writes.
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


# The last engine made for each URL, for the versions in a crash log (a few per process).
_ENGINES: dict[str, Engine] = {}


def engine_versions() -> list[str]:
    """One line per state database this process opened: dialect, driver and server versions.

    Reads only what the engines already know; asks no database anything.
    """
    lines = []
    for shown, engine in list(_ENGINES.items()):
        dialect = engine.dialect
        driver = "?"
        dbapi = getattr(dialect, "dbapi", None) or getattr(dialect, "loaded_dbapi", None)
        if dialect.name == "sqlite":
            driver = f"sqlite {getattr(dbapi, 'sqlite_version', '?')}"
        elif dbapi is not None:
            driver = f"{dialect.driver} {getattr(dbapi, '__version__', '?')}"
        server = getattr(dialect, "server_version_info", None)
        shown_server = ".".join(str(part) for part in server) if server else "not connected"
        lines.append(
            f"state database {shown}: dialect {dialect.name}+{dialect.driver}, "
            f"driver {driver}, server {shown_server}"
        )
    return lines


def create_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for a supported state URL, with the file created safely for SQLite.

    ``create=False``: a missing SQLite file is an error instead of a new database.
    """
    engine = _create_engine(url, create=create)
    _ENGINES[redact_url(engine.url)] = engine
    return engine


def _create_engine(url: str, *, create: bool) -> Engine:
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    shown = redact_url(parsed)
    if backend not in ("sqlite", "postgresql"):
        # Checked before the driver name: asking for it loads the dialect, and an unknown
        # scheme would surface as SQLAlchemy's NoSuchModuleError.
        raise StateUnavailable(
            f"state URL {shown}: unsupported database {backend!r}; use "
            "sqlite:////absolute/path.db or postgresql+psycopg://user:password@host/database"
        )
    driver = parsed.get_driver_name()
    if backend == "sqlite":
        if driver not in ("pysqlite", ""):
            raise StateUnavailable(
                f"state URL {shown}: only the standard sqlite3 driver is supported"
            )
        _prepare_sqlite_file(parsed, create=create)
        engine = sa.create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        if driver not in ("psycopg", ""):
            raise StateUnavailable(
                f"state URL {shown}: use postgresql+psycopg:// (psycopg 3), not {driver}"
            )
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        if "application_name" not in parsed.query:
            connect_args["application_name"] = "sftp-provisioner"
        try:
            return sa.create_engine(
                parsed.set(drivername="postgresql+psycopg"),
                connect_args=connect_args,
                pool_pre_ping=True,
            )
        except ImportError as exc:
            raise StateUnavailable(
                f"state URL {shown} needs psycopg 3 (install sftp-provisioner[postgresql]): {exc}"
            ) from None
    raise StateUnavailable(
        f"state URL {shown}: unsupported database {backend!r}; use sqlite:////path.db "
        "or postgresql+psycopg://"
    )


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction; database failures come out as :class:`StateError` subclasses.

    Reads see one consistent snapshot (REPEATABLE READ on PostgreSQL, a deferred transaction
    in SQLite WAL). Writes on SQLite take the write lock at BEGIN so that two writers queue
    up instead of failing halfway with "database is locked"; on PostgreSQL writers serialise
    on the ``state_meta`` row lock instead.
    """
    shown = redact_url(engine.url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE" if write else "DEFERRED"})
            elif not write:
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn
    except StateError:
        raise
    except sa.exc.IntegrityError as exc:
        raise StateConflict(
            f"state database {shown} refused a write: {describe_error(exc, engine.url)}"
        ) from exc
    except (sa.exc.DBAPIError, sa.exc.DisconnectionError, sa.exc.TimeoutError) as exc:
        # The one place where the driver's failures become state errors: whether the database
        # was never reachable or went away in the middle of a run, the caller gets a sentence.
        detail = describe_error(exc, engine.url)
        if isinstance(exc, sa.exc.DBAPIError) and not _is_unavailable(engine, exc):
            raise StateError(f"state database {shown} failed: {detail}") from exc
        raise StateUnavailable(
            f"state database {shown} is unavailable: {detail}; {_what_to_check(engine)}"
        ) from exc


def _what_to_check(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return (
            "check the file and its directory (permissions, free space, another process "
            "holding it), then run again"
        )
    return "check that the database server is running and reachable, then run again"


# sqlite3 raises OperationalError for SQL mistakes too ("no such table"), so for SQLite the
# message tells whether the file itself is the problem.
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "unable to open",
    "disk i/o error",
    "readonly database",
    "not a database",
    "database disk image is malformed",
    "database or disk is full",
)


def _is_unavailable(engine: Engine, exc: sa.exc.DBAPIError) -> bool:
    if engine.dialect.name == "sqlite":
        text = describe_error(exc).lower()
        return any(marker in text for marker in _SQLITE_UNAVAILABLE)
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
