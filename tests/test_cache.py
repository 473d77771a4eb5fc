"""The validation cache gives exactly what a cold run gives.

Every test makes a small declarations repository (a copy of the examples plus some files of
its own), validates it once to fill the cache, changes something, and compares a run with the
cache against a run without: same diagnostics, always. Both kinds of cache are exercised: the
gate's summaries (and its memo of the last run) and the reconciler's full results.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from provisioner import cache as cache_module
from provisioner.cache import RefStates, ResultCache, decode_text, encode, stamp_of
from provisioner.declarations import _state_of_resolved, check_file, ref_state
from provisioner.rules import FileSummary
from provisioner.validate import ValidateSettings, ValidationReport, validate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# --- material ------------------------------------------------------------------------------


def ed25519_line(comment: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


def certificate(not_after: datetime, *, der: bool = True) -> bytes:
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "200803"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Citizen CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
        ]
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Test Cache (Signature)"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
        .add_extension(
            x509.KeyUsage(False, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


QUALITY = """\
quality:
  name: CACHE TEST
  enterprise_number: "0316.969.769"
  type: employer_nsso
administrators:
  - name: Test Admin
    email: admin@cache.example
    role: local
structured_messages:
  technical_user: cachetest01
  contact:
    last_name: Test
    first_name: Cache
    title: mr
    function: IT
    language: nl
    phone: "02 555 12 34"
    emails:
      - it@cache.example
  channels:
    sftp:
      connection: internet
      ssh_keys:
        - ../keys/cache.pub
      certificate: ../certs/{certificate}
      applications:
        - dmfa
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The examples, plus a quality whose key and certificate are files of its own."""
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES, root)
    (root / "keys" / "cache.pub").write_text(ed25519_line("cache@test") + "\n")
    (root / "certs" / "cache.cer").write_bytes(certificate(datetime(2028, 1, 1, tzinfo=UTC)))
    (root / "qualities" / "0316969769.yaml").write_text(QUALITY.format(certificate="cache.cer"))
    age(root)
    return root


def age(root: Path, seconds: int = 3600) -> None:
    """Back-date every file, as a checkout made some time ago (stamps are then recorded)."""
    past = (datetime.now(UTC) - timedelta(seconds=seconds)).timestamp()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.utime(Path(dirpath) / name, (past, past), follow_symlinks=False)


def run(
    repo: Path,
    cache_dir: Path | None,
    *,
    now: datetime = NOW,
    paths: tuple[Path, ...] = (Path(),),
    full: bool = False,
) -> ValidationReport:
    settings = ValidateSettings(paths=paths, cwd=repo, now=now, cache_dir=cache_dir, jobs=1)
    return validate(settings, full=full)


def same_as_cold(
    repo: Path,
    cache_dir: Path,
    *,
    now: datetime = NOW,
    paths: tuple[Path, ...] = (Path(),),
    full: bool = False,
) -> ValidationReport:
    warm = run(repo, cache_dir, now=now, paths=paths, full=full)
    cold = run(repo, None, now=now, paths=paths, full=full)
    assert warm.diagnostics == cold.diagnostics
    assert warm.files == cold.files
    if full:
        assert warm.summaries == cold.summaries
        assert warm.results == cold.results
    return warm


def codes(report: ValidationReport) -> set[str]:
    return {d.code for d in report.diagnostics}


KINDS = [pytest.param(False, id="summary"), pytest.param(True, id="full")]


@pytest.fixture(autouse=True, params=["racy-rule", "stamps-trusted"])
def stamps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test twice: with the real rule (files touched within two seconds of a run
    are hashed again, which is every file of a test) and with every stamp recorded, so that
    the stamp shortcut itself is exercised."""
    if request.param == "stamps-trusted":
        monkeypatch.setattr(cache_module, "RACY_NS", -(10**15))
    return str(request.param)


# --- an unchanged repository ---------------------------------------------------------------


@pytest.mark.parametrize("full", KINDS)
def test_unchanged_repository_is_served_from_the_cache(
    repo: Path, tmp_path: Path, full: bool
) -> None:
    cache_dir = tmp_path / "cache"
    first = run(repo, cache_dir, full=full)
    assert first.cached == 0
    assert first.ok
    second = same_as_cold(repo, cache_dir, full=full)
    assert second.cached == len(second.files) == 3


def test_full_results_come_back_equal(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=True)
    warm = run(repo, cache_dir, full=True)
    cold = run(repo, None, full=True)
    assert warm.cached == 3
    for a, b in zip(warm.results, cold.results, strict=True):
        assert a == b
        assert a.declaration is not None and b.declaration is not None
        assert type(a.declaration) is type(b.declaration)
        assert a.declaration.model_dump() == b.declaration.model_dump()
        assert a.declaration.model_fields_set == b.declaration.model_fields_set
        assert [d.severity for d in a.diagnostics] == [d.severity for d in b.diagnostics]


def test_every_test_case_round_trips(tmp_path: Path) -> None:
    """Whatever check_file can return (errors of every kind included) is encoded exactly."""
    cases = Path(__file__).parent / "cases"
    files = sorted(cases.glob("*/qualities/**/*.y*ml"))
    assert files
    for path in files:
        result = check_file(path, path.name, cases.parent.parent)
        back = decode_text(json.dumps(encode(result)))
        assert back == result, path


# --- changes between two runs --------------------------------------------------------------


@pytest.mark.parametrize("full", KINDS)
def test_a_changed_key_file(repo: Path, tmp_path: Path, full: bool) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=full)
    key = repo / "keys" / "cache.pub"
    key.write_text("ssh-dss AAAAB3NzaC1kc3MAAACBAP== old@dsa\n")
    report = same_as_cold(repo, cache_dir, full=full)
    assert not report.ok


@pytest.mark.parametrize("full", KINDS)
def test_a_key_file_changed_with_the_same_size_and_mtime(
    repo: Path, tmp_path: Path, full: bool
) -> None:
    """The stamp includes the ctime: restoring the mtime does not hide an edit."""
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=full)
    key = repo / "keys" / "cache.pub"
    before = key.stat()
    time.sleep(0.05)  # past the filesystem's timestamp granularity: the ctime moves
    other = ed25519_line("cache@test") + "\n"
    assert len(other) == before.st_size
    key.write_text(other)
    os.utime(key, ns=(before.st_atime_ns, before.st_mtime_ns))
    warm = same_as_cold(repo, cache_dir, full=full)
    assert warm.cached == 2  # the edited quality was checked again


@pytest.mark.parametrize("full", KINDS)
def test_a_changed_declaration(repo: Path, tmp_path: Path, full: bool) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=full)
    path = repo / "qualities" / "0316969769.yaml"
    path.write_text(path.read_text().replace("cachetest01", "secsocexemple01"))
    report = same_as_cold(repo, cache_dir, full=full)
    assert "duplicate-technical-user" in codes(report)


@pytest.mark.parametrize("full", KINDS)
def test_a_repointed_symlink(repo: Path, tmp_path: Path, full: bool) -> None:
    certs = repo / "certs"
    (certs / "other.cer").write_bytes(certificate(datetime(2026, 12, 1, tzinfo=UTC)))
    (certs / "current.cer").symlink_to("cache.cer")
    path = repo / "qualities" / "0316969769.yaml"
    path.write_text(QUALITY.format(certificate="current.cer"))
    age(repo)
    cache_dir = tmp_path / "cache"
    assert run(repo, cache_dir, full=full).ok
    (certs / "current.cer").unlink()
    (certs / "current.cer").symlink_to("other.cer")
    report = same_as_cold(repo, cache_dir, full=full)
    assert "certificate-expiring" in codes(report)
    # And to a file outside the root, with the same content as before.
    outside = tmp_path / "outside.cer"
    outside.write_bytes((certs / "cache.cer").read_bytes())
    (certs / "current.cer").unlink()
    (certs / "current.cer").symlink_to(outside)
    report = same_as_cold(repo, cache_dir, full=full)
    assert "path-outside-root" in codes(report)


@pytest.mark.parametrize("full", KINDS)
def test_a_repointed_directory_symlink(repo: Path, tmp_path: Path, full: bool) -> None:
    """Same file name, same content: only the directory link moved, out of the root."""
    shutil.move(repo / "keys", repo / "keys-a")
    (repo / "keys").symlink_to("keys-a")
    age(repo)
    cache_dir = tmp_path / "cache"
    assert run(repo, cache_dir, full=full).ok
    shutil.copytree(repo / "keys-a", tmp_path / "keys-b")
    (repo / "keys").unlink()
    (repo / "keys").symlink_to(tmp_path / "keys-b")
    age(tmp_path / "keys-b")
    report = same_as_cold(repo, cache_dir, full=full)
    assert "path-outside-root" in codes(report)


@pytest.mark.parametrize("full", KINDS)
def test_a_directory_symlink_repointed_out_of_the_root_and_back(
    repo: Path, tmp_path: Path, full: bool
) -> None:
    """The directory resolves to the same place, but through a link outside the root: the
    cached verdict must be the cold one (refused), not the one of the same resolved path."""
    shutil.move(repo / "keys", repo / "keys-a")
    (repo / "keys").symlink_to("keys-a")
    age(repo)
    cache_dir = tmp_path / "cache"
    assert run(repo, cache_dir, full=full).ok
    (tmp_path / "hop").symlink_to(repo / "keys-a")
    (repo / "keys").unlink()
    (repo / "keys").symlink_to(tmp_path / "hop")
    report = same_as_cold(repo, cache_dir, full=full)
    assert "path-outside-root" in codes(report)


@pytest.mark.parametrize("full", KINDS)
def test_a_symlink_repointed_to_a_hard_link(repo: Path, tmp_path: Path, full: bool) -> None:
    """The same inode (same stamp, same content) reached through another path: the path
    decides whether the reference stays inside the root."""
    shutil.move(repo / "keys", repo / "keys-a")
    (repo / "keys").symlink_to("keys-a")
    outside = tmp_path / "outside-keys"
    outside.mkdir()
    for f in (repo / "keys-a").iterdir():
        os.link(f, outside / f.name)  # before the first run: the stamps will not move
    age(repo)
    cache_dir = tmp_path / "cache"
    assert run(repo, cache_dir, full=full).ok
    (repo / "keys").unlink()
    (repo / "keys").symlink_to(outside)
    report = same_as_cold(repo, cache_dir, full=full)
    assert "path-outside-root" in codes(report)


@pytest.mark.parametrize("full", KINDS)
def test_a_referenced_file_that_disappears_and_comes_back(
    repo: Path, tmp_path: Path, full: bool
) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=full)
    key = repo / "keys" / "cache.pub"
    content = key.read_bytes()
    key.unlink()
    assert "file-not-found" in codes(same_as_cold(repo, cache_dir, full=full))
    key.write_bytes(content)
    assert same_as_cold(repo, cache_dir, full=full).ok


@pytest.mark.parametrize("full", KINDS)
def test_a_certificate_that_expired_between_two_runs(
    repo: Path, tmp_path: Path, full: bool
) -> None:
    cache_dir = tmp_path / "cache"
    assert run(repo, cache_dir, now=NOW, full=full).ok
    later = datetime(2028, 1, 2, tzinfo=UTC)
    report = same_as_cold(repo, cache_dir, now=later, full=full)
    assert report.cached == 3
    assert "certificate-expired" in codes(report)
    assert not report.ok
    # And warns in the 60 days before.
    soon = datetime(2027, 12, 1, tzinfo=UTC)
    assert "certificate-expiring" in codes(same_as_cold(repo, cache_dir, now=soon, full=full))


def test_a_key_that_expired_between_two_runs(repo: Path, tmp_path: Path) -> None:
    path = repo / "qualities" / "0316969769.yaml"
    text = path.read_text().replace(
        "        - ../keys/cache.pub\n",
        "        - key: ../keys/cache.pub\n          expires: 2027-03-01\n",
    )
    path.write_text(text)
    age(repo)
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir)
    report = same_as_cold(repo, cache_dir, now=datetime(2027, 3, 5, tzinfo=UTC))
    assert "key-expired" in codes(report)


def test_a_file_added_and_removed(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir)
    extra = repo / "qualities" / "copy.yaml"
    shutil.copy(repo / "qualities" / "0316969769.yaml", extra)
    assert "duplicate-enterprise-number" in codes(same_as_cold(repo, cache_dir))
    extra.unlink()
    assert same_as_cold(repo, cache_dir).ok


def test_run_from_another_directory_shows_the_right_names(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir)
    settings = ValidateSettings(
        paths=(Path("qualities"),), cwd=repo, now=NOW, cache_dir=cache_dir, jobs=1
    )
    inside = ValidateSettings(
        paths=(Path(),), cwd=repo / "qualities", now=NOW, cache_dir=cache_dir, jobs=1
    )
    cold = ValidateSettings(paths=(Path(),), cwd=repo / "qualities", now=NOW, jobs=1)
    validate(settings)
    assert validate(inside).diagnostics == validate(cold).diagnostics
    assert validate(inside).files == ["0200065765.yaml", "0316969769.yaml", "0403170701.yaml"]


# --- caches that must not be trusted -------------------------------------------------------


def test_a_different_root(repo: Path, tmp_path: Path) -> None:
    """The same files seen from another root: references that were inside are now outside."""
    cache_dir = tmp_path / "cache"
    assert run(repo, cache_dir).ok
    # Validating only qualities/ makes it the root: ../keys and ../certs lead outside.
    narrow = (repo / "qualities",)
    report = same_as_cold(repo, cache_dir, paths=narrow)
    assert "path-outside-root" in codes(report)
    # A cache written for another root is not used, even under this root's file name and
    # with every path in it pointing here.
    second = tmp_path / "second"
    shutil.copytree(repo, second, symlinks=True)
    theirs = ResultCache(cache_dir, repo, "summary")
    ours = ResultCache(cache_dir / "copied", second, "summary")
    (cache_dir / "copied").mkdir(mode=0o700)
    for name_theirs, name_ours in (
        (theirs.index_name, ours.index_name),
        (theirs.results_name, ours.results_name),
    ):
        text = (cache_dir / name_theirs).read_text()
        header = json.dumps(theirs.header)
        text = text.replace(header, "HEADER").replace(str(repo), str(second))
        (cache_dir / "copied" / name_ours).write_text(text.replace("HEADER", header))
        (cache_dir / "copied" / name_ours).chmod(0o600)
    assert run(second, cache_dir / "copied").cached == 0


def test_a_cache_written_by_other_code(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir)
    monkeypatch.setattr(cache_module, "code_digest", lambda: "another version")
    assert run(repo, cache_dir).cached == 0


@pytest.mark.parametrize("full", KINDS)
@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "truncated",
        "empty",
        "wrong-types",
        "foreign-class",
        "wrong-arity",
        "flipped-byte",
        "results-garbage",
    ],
)
def test_a_corrupt_cache_file(repo: Path, tmp_path: Path, full: bool, damage: str) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=full)
    kind = "full" if full else "summary"
    (index,) = [
        p
        for p in cache_dir.glob(f"{kind}-*.json")
        if ".results." not in p.name and ".full." not in p.name
    ]
    # What holds the encoded values: the whole results, one file each (full kind), or the
    # summary rows.
    if full:
        (blobs,) = cache_dir.glob(f"{kind}-*.full")
        results = sorted(blobs.iterdir())
    else:
        results = list(cache_dir.glob(f"{kind}-*.results.json"))
    assert results

    def transform(change: Callable[[str], str]) -> None:
        before = [f.read_text() for f in results]
        after = [change(text) for text in before]
        assert after != before, "the damage must change something"
        for f, text in zip(results, after, strict=True):
            f.write_text(text)
        data = json.loads(index.read_text())
        data["memo"] = None
        index.write_text(json.dumps(data))

    def flip(text: str) -> str:
        # Inside a key: its fingerprint (summaries) or its blob (full results).
        marker = "SHA256:" if "SHA256:" in text else "AAAAC3NzaC1lZDI1NTE5AAAA"
        at = text.index(marker) + 30
        return text[:at] + ("B" if text[at] != "B" else "C") + text[at + 1 :]

    if damage == "garbage":
        index.write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:100])
    elif damage == "empty":
        index.write_bytes(b"")
    elif damage == "wrong-types":
        data = json.loads(index.read_text())
        for key in data["entries"]:
            data["entries"][key] = {"display": 1}
        if data.get("memo"):
            data["memo"]["clock"] = [[1, 2, 3]]
            data["memo"]["verdicts"] = "[1]"
        index.write_text(json.dumps(data))
    elif damage == "foreign-class":
        if full:
            transform(
                lambda t: t.replace('{"$Location":', '{"$Popen":').replace(
                    '{"$FileResult":', '{"$os.system":'
                )
            )
        else:
            # Summaries are plain rows; tagged values appear only in their diagnostics.
            transform(lambda t: re.sub(r'(\t\[[^\n]*?\},)""', r'\1"[{\\"$Popen\\":[1]}]"', t))
    elif damage == "wrong-arity":
        transform(
            lambda t: re.sub(
                r"(true|false)\]$",  # summary rows: one value too many at the end of each
                r"\1,0]",
                t.replace('{"$Location":[', '{"$Location":[0,'),
                flags=re.MULTILINE,
            )
        )
    elif damage == "flipped-byte":
        transform(flip)
    elif damage == "results-garbage":
        transform(lambda t: 'nonsense\n"x"\tnot json either\n')
    index.chmod(0o600)
    for f in results:
        f.chmod(0o600)
    same_as_cold(repo, cache_dir, full=full)
    if full:
        # Whole results that could not be read back were checked again and cached anew.
        assert run(repo, cache_dir, full=True).results == run(repo, None, full=True).results
    # The damaged cache was replaced by a good one.
    assert run(repo, cache_dir, full=full).cached == 3


@pytest.mark.parametrize("full", KINDS)
def test_a_cache_others_may_write_is_not_used(repo: Path, tmp_path: Path, full: bool) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=full)
    for mode in (0o777, 0o770, 0o757):
        cache_dir.chmod(mode)
        assert run(repo, cache_dir, full=full).cached == 0
    # Readable by others is fine (a directory made by `provisioner systemd install`: 0755).
    cache_dir.chmod(0o755)
    assert run(repo, cache_dir, full=full).cached == 3
    cache_dir.chmod(0o700)
    for f in cache_dir.iterdir():
        f.chmod(0o666)
    assert run(repo, cache_dir, full=full).cached == 0


@pytest.mark.usefixtures("needs_root")  # giving a file away needs root
def test_a_cache_owned_by_someone_else_is_not_used(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=True)
    for f in cache_dir.iterdir():
        os.chown(f, 12345, 12345)
    assert run(repo, cache_dir, full=True).cached == 0
    os.chown(cache_dir, 12345, 12345)
    assert run(repo, cache_dir, full=True).cached == 0


def test_a_symlinked_cache_file_is_not_followed(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=True)
    (index,) = [
        p
        for p in cache_dir.glob("full-*.json")
        if ".results." not in p.name and ".full." not in p.name
    ]
    elsewhere = tmp_path / "elsewhere.json"
    shutil.move(index, elsewhere)
    index.symlink_to(elsewhere)
    assert run(repo, cache_dir, full=True).cached == 0


def test_the_full_cache_is_private(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    run(repo, cache_dir, full=True)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    for f in cache_dir.rglob("*"):
        assert stat.S_IMODE(f.stat().st_mode) == (0o700 if f.is_dir() else 0o600), f


def test_a_cache_that_cannot_be_written_does_not_fail_the_run(repo: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache directory should be")
    assert run(repo, not_a_dir).ok
    assert run(repo, not_a_dir / "below", full=True).ok
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    try:
        assert run(repo, read_only).ok
    finally:
        read_only.chmod(0o700)


# --- stamps and references -----------------------------------------------------------------


@pytest.mark.parametrize("stamps", ["racy-rule"], indirect=True)
def test_a_file_changed_just_now_is_not_stamped(repo: Path, tmp_path: Path, stamps: str) -> None:
    """Stamps are recorded only for files still for two seconds before the run started."""
    path = repo / "qualities" / "0316969769.yaml"
    summary = FileSummary.of(check_file(path, "x", repo))
    # The fixture's utime moved every ctime to a moment ago: nothing is stamped.
    cache = ResultCache(tmp_path / "cache", repo, "summary")
    cache.put(path, "x", summary)
    entry = cache.entries[str(path)]
    assert entry[2] is None
    assert all(stamp is None for _state, stamp in entry[3].values())
    # A run that started ten seconds after those changes stamps them.
    later = ResultCache(tmp_path / "cache", repo, "summary", started_ns=time.time_ns() + 10**10)
    later.put(path, "x", summary)
    entry = later.entries[str(path)]
    assert entry[2] == stamp_of(path.stat())
    assert all(stamp is not None for _state, stamp in entry[3].values())


def test_ref_states_agree_with_ref_state(tmp_path: Path) -> None:
    base = tmp_path / "root"
    (base / "qualities").mkdir(parents=True)
    (base / "keys").mkdir()
    (base / "keys" / "a.pub").write_text("a\n")
    (base / "keys" / "big.pub").write_bytes(b"x" * (300 * 1024))
    (base / "keys" / "dir.pub").mkdir()
    (base / "keys" / "link.pub").symlink_to("a.pub")
    (base / "keys" / "dangling.pub").symlink_to("nowhere.pub")
    (base / "keys" / "zero.pub").symlink_to("/dev/zero")
    (base / "keys" / "loop.pub").symlink_to("loop.pub")
    (base / "linked").symlink_to("keys")
    names = ["a.pub", "big.pub", "dir.pub", "link.pub", "dangling.pub", "zero.pub", "loop.pub"]
    candidates = [base / "qualities" / ".." / "keys" / n for n in names]
    candidates += [base / "qualities" / ".." / "linked" / n for n in names]
    candidates += [base / "qualities" / "missing" / ".." / "keys" / "a.pub"]
    candidates += [base / "keys" / "a.pub" / "x", base / "keys" / ".", Path("/")]
    for candidate in candidates:
        expected = ref_state(candidate)
        st = None
        with contextlib.suppress(OSError):
            st = stamp_of(candidate.stat())
        for stamp in (None, st):
            assert RefStates().state(str(candidate), expected, stamp) == expected, candidate
        # check_file resolves once, without strictness, and must record the same state.
        try:
            resolved = candidate.resolve()
        except RuntimeError:
            assert expected == "missing"
        else:
            assert _state_of_resolved(resolved) == expected, candidate


def test_a_stamp_is_trusted_only_with_its_digest(tmp_path: Path) -> None:
    """A matching stamp reuses the recorded hash; any other stamp hashes the file again."""
    f = tmp_path / "k.pub"
    f.write_text("content\n")
    real = ref_state(f)
    fake = real.rpartition("|")[0] + "|" + "0" * 64
    assert RefStates().state(str(f), fake, stamp_of(f.stat())) == fake
    assert RefStates().state(str(f), fake, None) == real
    stale = stamp_of(f.stat())
    stale[3] -= 1
    assert RefStates().state(str(f), fake, stale) == real


def test_whole_results_of_changed_files_replace_the_old_ones(repo: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = run(repo, cache_dir, full=True)
    (blobs,) = cache_dir.glob("full-*.full")
    assert len(list(blobs.iterdir())) == len(first.files)
    path = repo / "qualities" / "0316969769.yaml"
    path.write_text(path.read_text().replace("cachetest01", "cachetest02"))
    run(repo, cache_dir, full=True)
    assert len(list(blobs.iterdir())) == len(first.files)
    assert run(repo, cache_dir, full=True).results == run(repo, None, full=True).results
