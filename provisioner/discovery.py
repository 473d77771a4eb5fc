"""Discovery: the declarations root, the declaration files under the paths given, and the
name each file is shown under.

Below the gate (`validate`) and the history rules (`gitbase`), which both name files the way
these functions do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from provisioner.diagnostics import Diagnostic, Location, error
from provisioner.safefile import OutsideRoot, confined_realpath, shown_name

YAML_SUFFIXES = (".yaml", ".yml")


def find_root(paths: Sequence[Path]) -> Path:
    """The declarations root: the Git work tree holding the paths, else the directory given.

    The work tree is first looked for above the paths as written: a directory of the
    repository that is a symbolic link (qualities -> /etc) must not make its target the root,
    where every file it holds would count as inside; `discover` then refuses it. Only when no
    work tree holds the paths as written is it looked for above where they lead.
    """
    given = [p if p.is_absolute() else Path.cwd() / p for p in paths] or [Path.cwd()]
    written = [Path(os.path.normpath(p)) for p in given]
    common = Path(os.path.commonpath([str(p if p.is_dir() else p.parent) for p in written]))
    for candidate in (common, *common.parents):
        if (candidate / ".git").exists():
            return candidate.resolve()
    resolved = [p.resolve() for p in given]
    dirs = [p if p.is_dir() else p.parent for p in resolved]
    common = Path(os.path.commonpath([str(d) for d in dirs]))
    for candidate in (common, *common.parents):
        if (candidate / ".git").exists():
            return candidate
    return common


def anchored(paths: Sequence[Path], cwd: Path) -> tuple[tuple[Path, ...], Path]:
    """`paths` made absolute against `cwd` (normalised as `find_root` reads them), and the
    declarations root spelt as the paths reach it (through a symbolic link, if they do).

    Diagnostics keep naming files relative to the working directory, where a terminal can
    open them; what a plan is fingerprinted by names them relative to this root instead (see
    `root_name`), so that a saved plan holds from any directory and however the path was
    typed (`decls`, `./decls/`, `/srv/decls`, `../../decls`).
    """
    given = tuple(Path(os.path.normpath(p if p.is_absolute() else cwd / p)) for p in paths)
    given = given or (Path(os.path.normpath(cwd)),)
    root = find_root(list(given))
    for path in given:
        for candidate in (path, *path.parents):
            if candidate == root:
                return given, candidate
    # The root as the paths spell it, through a symbolic link on the way to it.
    for path in given:
        for candidate in (path, *path.parents):
            with contextlib.suppress(OSError):
                if candidate.resolve() == root:
                    return given, candidate
    return given, root


def root_name(name: str, cwd: Path, root: Path) -> str:
    """A file named relative to `cwd` (a display path) or absolutely, named relative to `root`
    (both absolute): the same file gets the same name from any working directory."""
    absolute = os.path.normpath(cwd / name)
    prefix = str(root).rstrip("/") + "/"
    return absolute[len(prefix) :] if absolute.startswith(prefix) else absolute


def display_path(path: Path, cwd: Path) -> str:
    """`path` relative to `cwd` when it lies below it (lexically, like `Path.relative_to`).

    Characters that cannot be shown safely (a newline in a file name) are escaped: the name
    goes into line-based reports, annotations and logs. `declarations.check_file` refuses such
    a file, under this name.
    """
    return shown_name(_relative(path, cwd))


def _relative(path: Path, cwd: Path) -> str:
    text, base = str(path), str(cwd)
    if path.is_absolute() and cwd.is_absolute():
        if text == base:
            return "."
        prefix = base if base.endswith("/") else base + "/"
        return text[len(prefix) :] if text.startswith(prefix) else text
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def discover(
    paths: Sequence[Path], cwd: Path, root: Path | None = None
) -> tuple[list[Path], list[Diagnostic]]:
    """The declaration files under `paths`. With a `root`, a directory given that is (or is
    reached through) a symbolic link leading outside it is refused, not walked. Below a
    directory, links to directories are not followed (os.walk); links to files, FIFOs and
    devices are listed like files, and `check_file` refuses those that are not regular
    files inside the root, without reading them."""
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for given in paths:
        path = given if given.is_absolute() else cwd / given
        if root is not None and path.is_dir():
            try:
                confined_realpath(path, root)
            except OutsideRoot:
                problems.append(
                    error(
                        "file-outside-root",
                        "this directory is, or is reached through, a symbolic link to a directory "
                        "outside the declarations root; it was not read",
                        Location(display_path(path, cwd)),
                    )
                )
                continue
            except OSError:
                pass  # a loop: os.walk finds nothing, and says so below
        if path.is_dir():
            before = len(found)
            for dirpath, dirnames, filenames in os.walk(path):
                # Hidden directories hold tooling (.git, .github), never declarations.
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(
                    Path(dirpath) / name
                    for name in sorted(filenames)
                    if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
                )
            if len(found) == before:
                problems.append(
                    error(
                        "no-declarations",
                        "no declarations (*.yaml, *.yml) found in this directory",
                        Location(display_path(path, cwd)),
                    )
                )
        elif os.path.lexists(path):
            # A file, or what poses as one (a FIFO, a device, a link): check_file decides.
            found.append(path)
        else:
            problems.append(
                error(
                    "file-not-found", "no such file or directory", Location(display_path(path, cwd))
                )
            )
    unique = sorted({p.absolute(): None for p in found})
    return unique, problems
