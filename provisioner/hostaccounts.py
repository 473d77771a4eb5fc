"""Names the host itself already uses, which can therefore not be technical users.

A technical user is an account in the extrausers files; when the host's own passwd or group
database (through NSS: /etc/passwd, LDAP, systemd...) already has that name, the host's entry
wins the lookup and the channel can never log in. Entries of the extrausers files the
provisioner wrote itself are ours and do not count. Read-only, like `observe`.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from provisioner.observe import Observed, observe_path
from provisioner.settings import HostSettings

T = TypeVar("T")

NSSWITCH = Path("/etc/nsswitch.conf")
# NSS sources whose every entry getpwall()/getgrall() list: with only these on a line, the
# listing is the whole database and no name need be looked up on its own.
LISTABLE_SOURCES = frozenset({"files", "compat", "db", "extrausers", "systemd"})


def listing_is_complete(nsswitch: str, database: str) -> bool:
    """Whether every source of `database` in an nsswitch.conf text can be listed."""
    sources: list[str] | None = None
    for line in nsswitch.splitlines():
        name, _, rest = line.split("#", 1)[0].partition(":")
        if name.strip() == database:
            # "[NOTFOUND=return]" and the like are actions, not sources.
            sources = [w for w in rest.split() if not w.startswith("[")]
    if sources is None:
        sources = ["files"]  # glibc's default for a missing line (then "files" alone)
    return bool(sources) and all(w in LISTABLE_SOURCES for w in sources)


@dataclass(frozen=True, slots=True)
class HostName:
    """Why a name is the host's: which database, and its id there."""

    database: str  # "passwd" or "group"
    ident: int

    def describe(self) -> str:
        what = "an account" if self.database == "passwd" else "a group"
        id_name = "uid" if self.database == "passwd" else "gid"
        return f"{what} of this host ({self.database} database, {id_name} {self.ident})"


@dataclass(frozen=True, slots=True)
class NameDatabases:
    """What NSS says of the host's passwd and group databases: every listed entry (name ->
    ids), whether the listing is the whole database, and how to look one name up."""

    listed: dict[str, dict[str, set[int]]]
    complete: dict[str, bool]
    lookup: Callable[[str, str], int | None]

    @classmethod
    def of_host(cls) -> NameDatabases:
        """This host's, through NSS: each database listed once."""
        try:
            nsswitch = NSSWITCH.read_text("utf-8", "replace")
        except OSError:
            nsswitch = None  # unknown sources: look new names up one by one
        complete = {
            db: nsswitch is not None and listing_is_complete(nsswitch, db)
            for db in ("passwd", "group")
        }
        listed: dict[str, dict[str, set[int]]] = {"passwd": {}, "group": {}}
        for pw in _safe(pwd.getpwall):
            listed["passwd"].setdefault(pw.pw_name, set()).add(pw.pw_uid)
        for gr in _safe(grp.getgrall):
            listed["group"].setdefault(gr.gr_name, set()).add(gr.gr_gid)
        return cls(listed, complete, _lookup)


def _ours(path: Path, observe: Callable[[Path], Observed]) -> dict[str, set[int]]:
    """name -> ids of the entries in one of the extrausers files we write."""
    data = observe(path).content  # never through a symlink
    if data is None:
        return {}
    out: dict[str, set[int]] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            out.setdefault(fields[0], set()).add(int(fields[2]))
    return out


class HostNames:
    """The host's own passwd and group names, as NSS reports them, minus our entries.

    Every database is listed once (a lookup per name costs about half a millisecond through
    NSS, and extrausers scans its whole file for each). When nsswitch.conf names a source
    that cannot be listed (LDAP, sss often are not), a name we have not written yet is also
    looked up on its own: only new channels pay for that.
    """

    def __init__(
        self,
        settings: HostSettings,
        databases: NameDatabases | None = None,
        observe: Callable[[Path], Observed] = observe_path,
    ) -> None:
        """`databases` and `observe`: this host's NSS and files unless given (a recorded
        host's, see provisioner.hostview)."""
        # With --root these are the prefixed files of the trial: its entries are ours, and
        # the host's real databases are asked all the same.
        self._ours = {
            "passwd": _ours(settings.extrausers_dir / "passwd", observe),
            "group": _ours(settings.extrausers_dir / "group", observe),
        }
        databases = databases or NameDatabases.of_host()
        self._complete = databases.complete
        self._listed = databases.listed
        self._lookup = databases.lookup

    def owner(self, name: str) -> HostName | None:
        """The host's entry for `name`, or None when only ours (or nobody) has it."""
        # A channel we wrote already was looked up when it was new; only the listings are
        # asked again for it (10,000 lookups by name would take seconds every run).
        known = name in self._ours["passwd"]
        for database in ("passwd", "group"):
            ours = self._ours[database].get(name, set())
            foreign = self._listed[database].get(name, set()) - ours
            complete = self._complete[database]
            if not foreign and not known and not complete and name not in self._listed[database]:
                looked = self._lookup(database, name)
                foreign = {looked} - ours if looked is not None else set()
            if foreign:
                return HostName(database, min(foreign))
        return None

    def owners(self, names: Iterable[str]) -> dict[str, HostName]:
        found = {}
        for name in names:
            hit = self.owner(name)
            if hit is not None:
                found[name] = hit
        return found


def _safe(listing: Callable[[], Sequence[T]]) -> Sequence[T]:
    try:
        return listing()
    except (OSError, KeyError):
        return []


def _lookup(database: str, name: str) -> int | None:
    try:
        if database == "passwd":
            return pwd.getpwnam(name).pw_uid
        return grp.getgrnam(name).gr_gid
    except (KeyError, OSError):
        return None
