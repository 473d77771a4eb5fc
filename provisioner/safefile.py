"""Reading a file somebody else controls: a regular file, of bounded size, never blocking.

Every declaration, every key and certificate file a declaration references, and the settings
file are read through `read_regular`. The declarations are written by administrators who do
not trust each other, so a "file" may be a FIFO (a plain read blocks forever, and `apply`
holds the host lock meanwhile), a device (/dev/zero is read until memory runs out; merely
opening some devices, such as a watchdog, has effects), or a symbolic link to a secret of the
host (/etc/shadow) whose lines a parser would then quote in its error messages. So:

- the kind of file is judged from `lstat` before anything is opened: only a regular file is
  ever opened, and never a device;
- it is opened with O_NOFOLLOW | O_NONBLOCK, and `fstat` on the descriptor must show the same
  regular file (a FIFO swapped in after the `lstat` cannot block the read) within the size cap;
- at most cap + 1 bytes are read, so a file that grows while it is read is refused too;
- symbolic links are followed only by `confined_realpath`, which refuses a link below the
  declarations root that leads out of it (the target is never named: the gate has no business
  telling which files exist outside the repository).

Hard links are not refused: a second name of a file outside the repository cannot come from
Git (a checkout never creates hard links, and neither does a pull request), only from somebody
with a shell on the machine, who can read what that account can read anyway; and the kernel's
protected_hardlinks (on by default in Debian) keeps even them from linking a file they could
not read. Refusing every file with st_nlink > 1 would refuse legitimate checkouts made with
`cp -al` or on deduplicating file systems, for no gain.
"""

# String paths and os calls on purpose: lstat, readlink, O_NOFOLLOW, as os.path.realpath.
# ruff: noqa: PTH109, PTH115, PTH116, PTH118, PTH120

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
# The kernel's own limit (MAXSYMLINKS) on links followed in one resolution.
MAX_LINKS = 40
_READ_CHUNK = 1 << 16


class Refused(OSError):
    """A file that is not read: `code` is the diagnostic code, `reason` says why in words."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class NotRegular(Refused):
    def __init__(self, mode: int) -> None:
        super().__init__("file-not-regular", f"is {kind_of(mode)}, not a regular file")


class TooLarge(Refused):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__("file-too-large", f"is {size} bytes; at most {cap}")
        self.size = size
        self.cap = cap


class SymbolicLink(Refused):
    """The last component is a symbolic link: resolve it with `confined_realpath` first."""

    def __init__(self) -> None:
        super().__init__("file-symlink", "is a symbolic link")


class OutsideRoot(Refused):
    """`link`: the symbolic link, inside the root, through which the path leaves it."""

    def __init__(self, link: str) -> None:
        super().__init__(
            "file-outside-root", "leads outside the declarations root through a symbolic link"
        )
        self.link = link


class Changed(Refused):
    def __init__(self) -> None:
        super().__init__("file-unreadable", "changed while it was being read")


def kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def read_regular(
    path: str | Path, cap: int, *, info: os.stat_result | None = None, follow: bool = False
) -> bytes:
    """The bytes of the regular file at `path`, at most `cap` of them; raises OSError.

    `info`: the `lstat` of `path` (its `stat` when `follow`), when the caller has just taken
    it. With `follow`, a symbolic link is followed wherever it leads (the settings file: the
    operator's own, often a link made by configuration management); without it, a link as
    last component raises `SymbolicLink`. Every refusal is a `Refused`, raised before a byte
    is read.
    """
    if info is None:
        info = os.stat(path) if follow else os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SymbolicLink
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular(info.st_mode)
    if info.st_size > cap:
        raise TooLarge(info.st_size, cap)
    try:
        fd = os.open(path, OPEN_FLAGS & ~os.O_NOFOLLOW if follow else OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise SymbolicLink from None  # swapped in after the lstat
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(st.st_mode)
        if (st.st_dev, st.st_ino) != (info.st_dev, info.st_ino):
            raise Changed
        if st.st_size > cap:
            raise TooLarge(st.st_size, cap)
        chunks: list[bytes] = []
        left = cap + 1
        while left > 0:
            chunk = os.read(fd, min(left, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:
            raise TooLarge(max(len(data), os.fstat(fd).st_size), cap)  # it grew meanwhile
        return data
    finally:
        os.close(fd)


def within(path: str, root: str) -> bool:
    """Whether the normalised absolute `path` is `root` or lies below it."""
    if path == root:
        return True
    if _plain(path) and _plain(root):
        # Both absolute, without empty or "." components: their components are what
        # split("/") gives, so the prefix test is commonpath's, at a tenth of its cost (the
        # cache asks it of every referenced file of every declaration).
        return root == "/" or path.startswith(root + "/")
    return os.path.commonpath((path, root)) == root


def _plain(path: str) -> bool:
    """Absolute, and every component non-empty and not ".": a path commonpath leaves as is."""
    return path.startswith("/") and (
        path == "/" or ("//" not in path and "/./" not in path and not path.endswith(("/", "/.")))
    )


class _Check:
    """A marker in `confined_realpath`'s work list: the target of `link` is resolved here."""

    __slots__ = ("link",)

    def __init__(self, link: str) -> None:
        self.link = link


def confined_realpath(path: str | Path, root: str | Path) -> str:
    """`os.path.realpath(path)`, refusing symbolic links below `root` that lead out of it.

    Each link that lies inside the root must resolve inside the root, and once such a link has
    been followed, every further link on the way must lie inside the root too: every hop
    stays in the repository. Links above the root (the operator's own path to the checkout)
    are followed freely. Raises `OutsideRoot` (naming the first link inside the root that was followed), or
    OSError(ELOOP) after MAX_LINKS links; a missing component is kept as written, as realpath
    does without `strict`.
    """
    base = str(root)
    text = os.fspath(path)
    if not text.startswith("/"):
        text = os.path.join(os.getcwd(), text)
    todo: list[str | _Check] = list(reversed(text.split("/")))
    current = "/"
    entered: str | None = None  # the first link inside the root that was followed
    links = 0
    while todo:
        name = todo.pop()
        if isinstance(name, _Check):
            if not within(current, base):
                raise OutsideRoot(name.link)
            continue
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        try:
            info = os.lstat(candidate)
        except OSError:
            current = candidate
            continue
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        inside = within(candidate, base)
        if not inside and entered is not None:
            raise OutsideRoot(entered)  # never the link outside: its name is not ours to tell
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), text)
        target = os.readlink(candidate)
        if inside:
            entered = entered or candidate
            todo.append(_Check(entered))
        if target.startswith("/"):
            current = "/"
        todo.extend(reversed(target.split("/")))
    return current


# --- names that can be shown -----------------------------------------------------------------

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte that is not UTF-8 (surrogateescape)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown_name(text: str) -> str:
    """`text` with every character that cannot be shown safely escaped (\\n, \\u2028, \\xff).

    Unsafe: what `str.isprintable` calls unprintable, that is control and format characters
    (C0, C1, DEL, bidirectional overrides, zero-width characters), line and paragraph
    separators, spaces other than the ASCII space, unassigned code points, and the lone
    surrogates that stand for bytes of a name that is not UTF-8. The result holds no line
    break, so it cannot start a forged line in a report or an annotation.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def unsafe_part(path: Path, root: Path) -> str | None:
    """The first component of `path` below `root` whose name cannot be shown safely."""
    if str(path).isprintable():
        return None  # every component is then printable: the usual case, in one C-speed pass
    parts = path.relative_to(root).parts if path.is_relative_to(root) else path.parts
    for part in parts:
        if not part.isprintable():
            return part
    return None
