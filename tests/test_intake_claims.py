"""Names already sent (133) are decided in the state: of hosts racing for a name, one wins.

Against SQLite and a real PostgreSQL server (tests/pg.py), with threads standing for hosts
that share the database and accept a set with the same names at the same moment.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from provisioner.intake import claims
from provisioner.state import StateStore, StateUnavailable

pytest_plugins = ("pg",)

NAMES = ["FI.DMFA.100000.20261201.00001.R.1.1", "GO.DMFA.100000.20261201.00001.R.1"]
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _race(url: str, hosts: int = 8) -> dict[str, list[str]]:
    engines = [claims.open_state(url) for _ in range(hosts)]
    start = threading.Barrier(hosts)
    taken: dict[str, list[str]] = {}

    def host(i: int) -> None:
        start.wait()
        taken[f"set-{i}"] = claims.claim(
            engines[i], set_id=f"set-{i}", sender="100000", names=NAMES, host=f"h{i}", now=NOW
        )

    threads = [threading.Thread(target=host, args=(i,)) for i in range(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    return taken


def _check(url: str) -> None:
    taken = _race(url)
    winners = [s for s, names in taken.items() if not names]
    assert len(winners) == 1, taken
    assert all(names == sorted(NAMES) for s, names in taken.items() if s not in winners)
    engine = claims.open_state(url)
    try:
        assert claims.claimed_by(engine, winners[0]) == sorted(NAMES)
        # The winner finishing its set after a crash finds its own claim.
        again = claims.claim(
            engine, set_id=winners[0], sender="100000", names=NAMES, host="h", now=NOW
        )
        assert again == []
        claims.release(engine, winners[0])
        assert (
            claims.claim(engine, set_id="later", sender="100000", names=NAMES, host="h", now=NOW)
            == []
        )
    finally:
        engine.dispose()


def test_sqlite_hosts_racing_for_a_name_one_wins(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path}/state.db")


@pytest.mark.postgres
def test_postgres_hosts_racing_for_a_name_one_wins(postgres_url: str) -> None:
    _check(postgres_url)


@pytest.mark.parametrize(
    "url",
    ["mysql://user@host/db", "sqlite:///relative.db", "postgresql+psycopg2://u@h/db"],
)
def test_the_gate_opens_the_state_as_every_command_does(url: str) -> None:
    """One opener for a state URL: the gate's refusals are the store's, word for word."""
    with pytest.raises(StateUnavailable) as gate:
        claims.open_state(url)
    with pytest.raises(StateUnavailable) as store:
        StateStore.open(url)
    assert str(gate.value) == str(store.value)


def test_a_fresh_database_opened_by_the_gate_is_migrated_for_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'state.db'}"
    claims.open_state(url).dispose()
    with StateStore.open(url, create=False) as store:
        assert store.version() == 0
