"""Bad input that cannot live as a golden case: too big, too slow, or built on the file system.

Nothing a declaration holds may crash or hang the gate: every input gets diagnostics with a
location. The small bad inputs (tabs, tags, duplicate keys, ...) are golden cases in
``tests/cases/bad-input``; here are the ones that need a generated file, a symlink, a FIFO or a
clock, and property tests that throw random bytes and random YAML at the parser and at the
per-file checks.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from provisioner.declarations import check_file
from provisioner.diagnostics import Diagnostic
from provisioner.source import MAX_FILE_BYTES, parse_document
from provisioner.validate import ValidateSettings, ValidationReport, validate

FIXED_NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CASES = Path(__file__).parent / "cases"
MATERIAL = CASES / "_material"
VALID = (CASES / "valid-minimal" / "qualities" / "0403170701.yaml").read_text()


def run(root: Path) -> ValidationReport:
    return validate(
        ValidateSettings(paths=(Path(),), cwd=root, now=FIXED_NOW, cache_dir=None, jobs=1)
    )


def codes(report: ValidationReport) -> list[tuple[str, int, str]]:
    return [(d.location.file, d.location.line, d.code) for d in report.diagnostics]


def declarations_repo(root: Path, certificate: str = "../certs/signature.cer") -> Path:
    """A declarations tree outside any Git work tree: its root is the directory given."""
    (root / "qualities").mkdir(parents=True)
    (root / "certs").mkdir()
    shutil.copy(MATERIAL / "certs" / "signature.cer", root / "certs" / "signature.cer")
    text = VALID.replace("../../_material/certs/signature.cer", certificate)
    (root / "qualities" / "a.yaml").write_text(text)
    return root


def test_valid_tree_outside_git_passes(tmp_path: Path) -> None:
    report = run(declarations_repo(tmp_path / "repo"))
    assert report.ok and not report.diagnostics


def test_file_over_one_mebibyte_is_refused_unread(tmp_path: Path) -> None:
    repo = declarations_repo(tmp_path / "repo")
    padding = "# " + "x" * 100 + "\n"
    (repo / "qualities" / "big.yaml").write_text(padding * (MAX_FILE_BYTES // len(padding) + 1))
    report = run(repo)
    assert codes(report) == [("qualities/big.yaml", 1, "file-too-large")]
    assert str(MAX_FILE_BYTES) in report.diagnostics[0].message


def test_file_of_exactly_one_mebibyte_is_read(tmp_path: Path) -> None:
    repo = declarations_repo(tmp_path / "repo")
    valid = VALID.replace("../../_material", "..")
    text = valid + "#" * (MAX_FILE_BYTES - len(valid.encode()) - 1) + "\n"
    assert len(text.encode()) == MAX_FILE_BYTES
    (repo / "qualities" / "a.yaml").write_text(text)
    assert run(repo).ok


def test_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """40 levels of 40 aliases would expand to 40**40 nodes: refused at the first alias."""
    lines = ['a: &a ["lol"]']
    for i in range(1, 40):
        lines.append(
            f"n{i}: &n{i} [" + ", ".join([f"*{'a' if i == 1 else f'n{i - 1}'}"] * 40) + "]"
        )
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    report = run(tmp_path)
    assert time.monotonic() - started < 2
    assert codes(report) == [("bomb.yaml", 2, "yaml-alias")]


@pytest.mark.parametrize(
    "opening",
    ["[" * 300_000, "\n" + "- " * 300_000, "{a: " * 200_000],
    ids=["flow-sequences", "block-sequences", "flow-mappings"],
)
def test_nesting_that_would_overflow_the_c_stack_is_refused(opening: str) -> None:
    """Hundreds of thousands of levels used to crash the process (segmentation fault)."""
    raw = ("quality: " + opening + "x").encode()
    assert len(raw) < MAX_FILE_BYTES
    # In a child process, so that a regression fails this test instead of killing pytest.
    code = (
        "import sys; from pathlib import Path; from provisioner.source import parse_document; "
        "doc, d = parse_document(sys.stdin.buffer.read(), Path('x'), 'x'); "
        "print(d[0].code, d[0].location.line)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=raw, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split()[0] == "yaml-too-deep"


def test_many_nesting_indicators_in_a_valid_declaration_still_pass(tmp_path: Path) -> None:
    """The deep-nesting guard looks at the structure, not at characters in comments."""
    repo = declarations_repo(tmp_path / "repo")
    path = repo / "qualities" / "a.yaml"
    path.write_text(path.read_text() + "# " + "-[{:?" * 2000 + "\n")
    report = run(repo)
    assert report.ok and not report.diagnostics


def test_certificate_symlink_leading_outside_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(MATERIAL / "certs" / "signature.cer", outside / "signature.cer")
    repo = declarations_repo(tmp_path / "repo", certificate="../certs/link.cer")
    (repo / "certs" / "link.cer").symlink_to(outside / "signature.cer")
    report = run(repo)
    assert codes(report) == [("qualities/a.yaml", 26, "path-outside-root")]
    assert (
        "'../certs/link.cer' leads outside the declarations root" in report.diagnostics[0].message
    )


def test_certificate_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    repo = declarations_repo(tmp_path / "repo", certificate="../certs/current.cer")
    (repo / "certs" / "current.cer").symlink_to("signature.cer")
    report = run(repo)
    assert report.ok and not report.diagnostics


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_reference_to_a_device_or_fifo_does_not_hang(tmp_path: Path, target: str) -> None:
    """A symlink to /dev/zero used to be read until memory ran out; a FIFO would block."""
    repo = declarations_repo(tmp_path / "repo")
    keys = repo / "keys"
    keys.mkdir()
    if target == "fifo":
        os.mkfifo(keys / "fifo.pub")
    else:
        (keys / "zero.pub").symlink_to(target)
    name = "fifo.pub" if target == "fifo" else "zero.pub"
    path = repo / "qualities" / "a.yaml"
    text = path.read_text()
    first_key = next(line for line in text.splitlines() if line.strip().startswith("- ssh-"))
    path.write_text(text.replace(first_key, f"        - ../keys/{name}"))
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "validate", "--no-cache", "."],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    expected = "path-outside-root" if target == "/dev/zero" else "file-not-regular"
    assert f"qualities/a.yaml:25:11: error[{expected}]" in done.stdout


def test_oversized_key_file_is_refused_unread(tmp_path: Path) -> None:
    repo = declarations_repo(tmp_path / "repo")
    (repo / "keys").mkdir()
    (repo / "keys" / "big.pub").write_text("ssh-ed25519 " + "A" * 300_000 + "\n")
    path = repo / "qualities" / "a.yaml"
    text = path.read_text()
    first_key = next(line for line in text.splitlines() if line.strip().startswith("- ssh-"))
    path.write_text(text.replace(first_key, "        - ../keys/big.pub"))
    report = run(repo)
    assert codes(report) == [("qualities/a.yaml", 25, "file-too-large")]


# --- property tests ------------------------------------------------------------------------

# Pieces of YAML syntax, and of the declaration format, to splice into a valid declaration.
_TOKENS = [
    ":",
    ": ",
    "- ",
    "? ",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "!tag ",
    "<<: *a",
    "\t",
    "'",
    '"',
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "\n  ",
    "\n    - ",
    "---\n",
    "...\n",
    "# ",
    "|\n",
    ">-\n",
    "\x00",
    "\ufeff",
    "é",
    "\u2028",
    "~",
    "null",
    "true",
    "0x1F",
    "1e9",
    ".inf",
    "2026-13-45",
    "0403.170.701",
    "quality",
    "administrators",
    "structured_messages",
    "technical_user",
    "ssh_keys",
    "certificate",
    "from",
    "expires",
    "applications",
    "preferred_channels",
    "../",
    "/etc/passwd",
    "ssh-ed25519 AAAA",
    "ssh-rsa ",
    "-----BEGIN ",
    "%YAML 1.1\n",
]


@st.composite
def mutated_declarations(draw: st.DrawFn) -> bytes:
    text = VALID
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(_TOKENS)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
    return text.encode("utf-8", "surrogatepass")


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["dmfa", "sftp", "local", "internet", "mr", "nl", "0403.170.701"])
)
_KEYS = st.sampled_from(
    [
        "quality",
        "name",
        "enterprise_number",
        "type",
        "administrators",
        "email",
        "role",
        "structured_messages",
        "technical_user",
        "contact",
        "emails",
        "phone",
        "channels",
        "sftp",
        "ftp",
        "ssh_keys",
        "key",
        "from",
        "expires",
        "certificate",
        "applications",
        "preferred_channels",
        "connection",
    ]
) | st.text(min_size=1, max_size=12)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=30,
)


def _dump(data: Any) -> bytes:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with the material where ../../_material/... of the valid declaration resolves."""
    root = tmp_path_factory.mktemp("sandbox")
    shutil.copytree(MATERIAL, root / "_material")
    (root / "a" / "qualities").mkdir(parents=True)
    return root


def _check_never_raises(root: Path, raw: bytes) -> list[Diagnostic]:
    doc, problems = parse_document(raw, Path("x.yaml"), "x.yaml")
    assert (doc is None) == bool(problems)
    for d in problems:
        assert d.is_error and d.location.line >= 1
    path = root / "a" / "qualities" / "x.yaml"
    path.write_bytes(raw)
    result = check_file(path, "x.yaml", root)
    for d in result.diagnostics:
        assert d.location.file == "x.yaml" and d.code and d.message
    return result.diagnostics


_PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(sandbox: Path, raw: bytes) -> None:
    _check_never_raises(sandbox, raw)


@_PROPERTY
@given(mutated_declarations())
def test_mutated_declarations_never_raise(sandbox: Path, raw: bytes) -> None:
    _check_never_raises(sandbox, raw)


@_PROPERTY
@given(_TREES)
def test_random_yaml_trees_never_raise(sandbox: Path, data: Any) -> None:
    diagnostics = _check_never_raises(sandbox, _dump(data))
    if not isinstance(data, dict):
        # A top-level list or scalar is one refusal. (A few texts the pure dumper writes, such
        # as "- :0", are YAML 1.2 that the C parser reads as YAML 1.1: a syntax error.)
        assert len(diagnostics) == 1
        assert diagnostics[0].code in ("not-a-mapping", "empty-file", "yaml-syntax")


# --- files that are not what they seem (issue 9; the CLI runs are in test_hostile_files) ----


def test_a_link_chain_that_leaves_the_root_and_comes_back_is_refused(tmp_path: Path) -> None:
    """Every hop stays inside: a link below the root through a link outside is refused even
    when the chain ends inside the root again."""
    from provisioner.safefile import OutsideRoot, confined_realpath

    root = tmp_path / "root"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "a.pub").write_text("a\n")
    (tmp_path / "out").symlink_to(root / "keys" / "a.pub")
    (root / "keys" / "via-outside.pub").symlink_to(tmp_path / "out")
    (root / "keys" / "direct.pub").symlink_to("a.pub")
    (root / "keys" / "absolute.pub").symlink_to(root / "keys" / "a.pub")
    assert confined_realpath(root / "keys" / "direct.pub", root) == str(root / "keys" / "a.pub")
    assert confined_realpath(root / "keys" / "absolute.pub", root) == str(root / "keys" / "a.pub")
    with pytest.raises(OutsideRoot) as refused:
        confined_realpath(root / "keys" / "via-outside.pub", root)
    assert refused.value.link == str(root / "keys" / "via-outside.pub")


def test_a_key_file_linked_to_shadow_is_neither_read_nor_hashed(tmp_path: Path) -> None:
    repo = declarations_repo(tmp_path / "repo")
    (repo / "keys").mkdir()
    (repo / "keys" / "shadow.pub").symlink_to("/etc/shadow")
    path = repo / "qualities" / "a.yaml"
    text = path.read_text()
    first_key = next(line for line in text.splitlines() if line.strip().startswith("- ssh-"))
    path.write_text(text.replace(first_key, "        - ../keys/shadow.pub"))
    result = check_file(path, "a.yaml", repo)
    assert [d.code for d in result.diagnostics] == ["path-outside-root"]
    # What the cache keeps of the reference says nothing of the file it points at.
    candidate = str(repo / "qualities" / ".." / "keys" / "shadow.pub")
    assert result.refs[candidate] == "outside"
    from provisioner.cache import RefStates

    assert RefStates(root=repo).state(candidate, "outside", None) == "outside"


def test_read_regular_refuses_before_opening(tmp_path: Path) -> None:
    from provisioner.safefile import NotRegular, SymbolicLink, TooLarge, read_regular

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("fifo")
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(NotRegular):
        read_regular(tmp_path / "fifo", 10)
    with pytest.raises(SymbolicLink):
        read_regular(tmp_path / "link", 10)
    with pytest.raises(NotRegular):
        read_regular(tmp_path / "link", 10, follow=True)
    with pytest.raises(TooLarge):
        read_regular(tmp_path / "big", 10)
    assert read_regular(tmp_path / "big", 11) == b"x" * 11


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_shown_names_are_one_printable_line(name: str) -> None:
    from provisioner.safefile import shown_name

    shown = shown_name(name)
    assert shown.isprintable()
    assert (shown == name) == name.isprintable()
