"""`--pull` and `--verify-signatures` against real Git repositories and real SSH signatures."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EN_ONDERNEMING, NOW, Q_ONDERNEMING, USER_ONDERNEMING, Host
from ops_support import SigningKey, clone, commit_all, declarations_repo, git, run

from provisioner import gitsync
from provisioner.errors import GitError

BACKUP_KEY = "backup@onderneming"


@pytest.fixture
def repo(host: Host, monkeypatch: pytest.MonkeyPatch) -> tuple[Host, Path]:
    """The examples as a repository: author clone (host.decls), bare upstream, host checkout."""
    # No user or system Git configuration leaks in; the host's signature policy is per repo.
    monkeypatch.setenv("HOME", str(host.base))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    upstream, checkout = declarations_repo(host.base, host.decls)
    commit_all(host.decls, "two qualities", sign=False)
    clone(upstream, checkout)
    return host, checkout


def _drop_backup_key(host: Host) -> None:
    path = host.quality(EN_ONDERNEMING)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if BACKUP_KEY not in line))


def test_pull_applies_the_new_revision_and_records_it(repo: tuple[Host, Path]) -> None:
    host, checkout = repo
    settings = host.settings()
    first = run(settings, [checkout], host.base, now=NOW, pull=True)
    assert first.outcome == "ok", first.errors
    assert BACKUP_KEY in settings.keys_file(USER_ONDERNEMING).read_text()

    _drop_backup_key(host)
    new = commit_all(host.decls, "retire the backup key", sign=False)
    second = run(settings, [checkout], host.base, now=NOW, pull=True)
    assert second.outcome == "ok", second.errors
    assert (second.previous_revision, second.revision) == (first.revision, new)
    assert git(checkout, "rev-parse", "HEAD") == new
    assert BACKUP_KEY not in settings.keys_file(USER_ONDERNEMING).read_text()
    with host.store() as store:
        assert [r.revision for r in store.last_runs(2)] == [new, first.revision]
        assert store.snapshot().registrations[Q_ONDERNEMING].revision == new


def test_a_dirty_checkout_is_not_applied(repo: tuple[Host, Path]) -> None:
    host, checkout = repo
    settings = host.settings()
    (checkout / "qualities" / "0200065765.yaml").write_text("edited on the host\n")
    report = run(settings, [checkout], host.base, now=NOW, pull=True)
    assert report.outcome == "failed"
    assert "local changes (qualities/0200065765.yaml)" in report.errors[0]
    assert not settings.routing_table.exists()
    with host.store() as store:
        assert [r.outcome for r in store.last_runs(5)] == ["failed"]


def test_a_diverged_checkout_is_not_applied(repo: tuple[Host, Path]) -> None:
    host, checkout = repo
    (checkout / "local.txt").write_text("x\n")
    git(checkout, "add", "local.txt")
    git(checkout, "commit", "-q", "-m", "a commit made on the host")
    _drop_backup_key(host)
    commit_all(host.decls, "upstream moves on", sign=False)
    report = run(host.settings(), [checkout], host.base, now=NOW, pull=True)
    assert report.outcome == "failed"
    assert "cannot fast-forward" in report.errors[0]


def test_a_failed_pull_is_a_failed_run(repo: tuple[Host, Path]) -> None:
    host, checkout = repo
    git(checkout, "remote", "set-url", "origin", str(host.base / "gone.git"))
    report = run(host.settings(), [checkout], host.base, now=NOW, pull=True)
    assert report.outcome == "failed"
    assert "git fetch failed" in report.errors[0]
    assert not host.settings().routing_table.exists()


def test_signed_revisions_are_applied_unsigned_ones_refused(repo: tuple[Host, Path]) -> None:
    host, checkout = repo
    settings = host.settings()
    key = SigningKey(host.base / "signing")
    key.sign_in(host.decls)
    key.trust_in(checkout)

    # The clone's revision is unsigned: refused, even without --pull.
    refused = run(settings, [checkout], host.base, now=NOW, verify_signatures=True)
    assert refused.outcome == "failed"
    assert "has no signature" in refused.errors[0]
    assert not settings.routing_table.exists()

    signed = commit_all(host.decls, "signed by the administrator", sign=True)
    assert git(host.decls, "log", "-1", "--format=%G?") == "N"  # the author has no trust file
    ok = run(settings, [checkout], host.base, now=NOW, pull=True, verify_signatures=True)
    assert ok.outcome == "ok", ok.errors
    assert ok.revision == signed
    assert gitsync.signature_state(checkout, signed)[0] == "G"

    _drop_backup_key(host)
    unsigned = commit_all(host.decls, "pushed without a signature", sign=False)
    again = run(settings, [checkout], host.base, now=NOW, pull=True, verify_signatures=True)
    assert again.outcome == "failed"
    assert f"revision {unsigned[:12]} has no signature" in again.errors[0]
    # Checked before the fast-forward: the checkout stays on the last verified revision.
    assert git(checkout, "rev-parse", "HEAD") == signed
    assert BACKUP_KEY in settings.keys_file(USER_ONDERNEMING).read_text()
    with host.store() as store:
        assert [r.outcome for r in store.last_runs(3)] == ["failed", "ok", "failed"]


def test_a_signature_by_an_unknown_key_is_refused(repo: tuple[Host, Path]) -> None:
    host, checkout = repo
    trusted = SigningKey(host.base / "trusted", "trusted")
    intruder = SigningKey(host.base / "intruder", "intruder")
    intruder.sign_in(host.decls)
    trusted.trust_in(checkout)
    commit_all(host.decls, "signed, but not by anyone the host trusts", sign=True)
    report = run(host.settings(), [checkout], host.base, now=NOW, pull=True, verify_signatures=True)
    assert report.outcome == "failed"
    assert "not applied (--verify-signatures)" in report.errors[0]


def test_pull_needs_a_git_checkout(host: Host) -> None:
    with pytest.raises(GitError, match="not a Git checkout"):
        gitsync.checkout_of([host.decls])
