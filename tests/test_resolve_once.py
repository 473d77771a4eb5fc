"""Resolving each directory of referenced files once per run changes no result.

Within a run (`directories_resolved_once`, or a pool worker), `check_file` resolves the
directory of a referenced key or certificate once and then each file by its own name. Every
shape of reference must give exactly the result of resolving the whole path each time:
symlinks (to a file, out of the root, dangling, looping, to a device), symlinked and missing
directories, directories and FIFOs where a file should be, oversized files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from provisioner import declarations
from provisioner.declarations import FileResult, check_file, directories_resolved_once

CASES = Path(__file__).parent / "cases"
MATERIAL = CASES / "_material"
VALID = (CASES / "valid-minimal" / "qualities" / "0403170701.yaml").read_text()
INLINE_KEY = next(line for line in VALID.splitlines() if line.strip().startswith("- ssh-"))
CERTIFICATE = "../../_material/certs/signature.cer"

# (certificate reference, key file reference) of each declaration in the tree.
REFERENCES = [
    ("../certs/signature.cer", "../keys/ed25519-1.pub"),
    ("../certs/link.cer", "../keys/link.pub"),
    ("../certs/outside.cer", "../keys/outside.pub"),
    ("../certs/dangling.cer", "../keys/dangling.pub"),
    ("../certs/loop.cer", "../keys/loop.pub"),
    ("../certs/zero.cer", "../keys/zero.pub"),
    ("../certs/dir.cer", "../keys/dir.pub"),
    ("../certs/fifo.cer", "../keys/fifo.pub"),
    ("../certs/big.cer", "../keys/big.pub"),
    ("../certs/missing.cer", "../keys/missing.pub"),
    ("../linked-certs/signature.cer", "../linked-keys/ed25519-1.pub"),
    ("../linked-certs/link.cer", "../linked-keys/link.pub"),
    ("../outside-dir/signature.cer", "../outside-dir/ed25519-1.pub"),
    ("../looping-dir/signature.cer", "../looping-dir/ed25519-1.pub"),
    ("../no-such-dir/signature.cer", "../no-such-dir/ed25519-1.pub"),
    ("../certs/signature.cer/x.cer", "../keys/ed25519-1.pub/x.pub"),
    ("../missing/../certs/signature.cer", "../missing/../keys/ed25519-1.pub"),
    ("../certs/../certs/signature.cer", "sub/../../keys/ed25519-1.pub"),
    ("../certs/..", "../keys/.."),
    ("/etc/signature.cer", "/etc/ed25519-1.pub"),
]


def make_tree(base: Path) -> Path:
    repo = base / "repo"
    outside = base / "outside"
    for directory in (repo / "qualities" / "sub", repo / "certs", repo / "keys", outside):
        directory.mkdir(parents=True)
    shutil.copy(MATERIAL / "certs" / "signature.cer", repo / "certs" / "signature.cer")
    shutil.copy(MATERIAL / "certs" / "signature.cer", outside / "signature.cer")
    shutil.copy(MATERIAL / "keys" / "ed25519-1.pub", repo / "keys" / "ed25519-1.pub")
    shutil.copy(MATERIAL / "keys" / "ed25519-1.pub", outside / "ed25519-1.pub")
    for kind, target in (("certs", "signature.cer"), ("keys", "ed25519-1.pub")):
        here = repo / kind
        suffix = target.rsplit(".", 1)[1]
        (here / f"link.{suffix}").symlink_to(target)
        (here / f"outside.{suffix}").symlink_to(outside / target)
        (here / f"dangling.{suffix}").symlink_to(f"nowhere.{suffix}")
        (here / f"loop.{suffix}").symlink_to(f"loop.{suffix}")
        (here / f"zero.{suffix}").symlink_to("/dev/zero")
        (here / f"dir.{suffix}").mkdir()
        os.mkfifo(here / f"fifo.{suffix}")
        (here / f"big.{suffix}").write_bytes(b"x" * (declarations.MAX_REFERENCED_BYTES + 1))
        (repo / f"linked-{kind}").symlink_to(kind)
    (repo / "outside-dir").symlink_to(outside)
    (repo / "looping-dir").symlink_to("looping-dir")
    for i, (certificate, key) in enumerate(REFERENCES):
        text = VALID.replace(CERTIFICATE, certificate)
        text = text.replace(INLINE_KEY, f"{INLINE_KEY}\n        - {key}")
        (repo / "qualities" / f"q{i:02d}.yaml").write_text(text)
    return repo


def check_all(repo: Path) -> list[FileResult]:
    files = sorted((repo / "qualities").glob("*.yaml"))
    return [check_file(path, path.name, repo) for path in files]


def test_resolving_directories_once_changes_no_result(tmp_path: Path) -> None:
    repo = make_tree(tmp_path)
    expected = check_all(repo)
    # Every kind of outcome is covered, not only the happy path.
    codes = {d.code for result in expected for d in result.diagnostics}
    assert {"path-outside-root", "file-not-found", "file-too-large", "path-absolute"} <= codes
    assert any(result.ok for result in expected)
    with directories_resolved_once():
        once = check_all(repo)
        again = check_all(repo)  # the directories now come from the run's memo
        memo = declarations._run_directories
    assert memo is not None
    assert any(memo.values()), "no directory was resolved once"
    assert None in memo.values(), "no directory was left to the usual resolution"
    assert once == expected
    assert again == expected


def test_a_run_sees_a_directory_symlink_repointed_since_the_last_run(tmp_path: Path) -> None:
    repo = make_tree(tmp_path)
    path = repo / "qualities" / "q10.yaml"  # references ../linked-certs and ../linked-keys
    with directories_resolved_once():
        before = check_file(path, path.name, repo)
    assert before.ok
    (repo / "linked-keys").unlink()
    (repo / "linked-keys").symlink_to(tmp_path / "outside")
    with directories_resolved_once():
        after = check_file(path, path.name, repo)
    assert after == check_file(path, path.name, repo)
    assert [d.code for d in after.diagnostics] == ["path-outside-root"]


@pytest.mark.parametrize("nested", [False, True])
def test_the_memo_lives_for_one_run(tmp_path: Path, nested: bool) -> None:
    with directories_resolved_once():
        if nested:
            with directories_resolved_once():
                pass
        assert declarations._run_directories is not None
    assert declarations._run_directories is None
