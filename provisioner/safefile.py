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
    _refuse_before_open(info, cap)
    fd = _open_unblocking(path, follow=follow)
    try:
        _refuse_opened(os.fstat(fd), info, cap)
        return _read_capped(fd, cap)
    finally:
        os.close(fd)


def _refuse_before_open(info: os.stat_result, cap: int) -> None:
    """Judged from the `lstat`: only a regular file within the cap is ever opened."""
    if stat.S_ISLNK(info.st_mode):
        raise SymbolicLink
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular(info.st_mode)
    if info.st_size > cap:
        raise TooLarge(info.st_size, cap)


def _open_unblocking(path: str | Path, *, follow: bool) -> int:
    """O_NONBLOCK always, O_NOFOLLOW unless `follow`: a FIFO or a link swapped in cannot hang."""
    try:
        return os.open(path, OPEN_FLAGS & ~os.O_NOFOLLOW if follow else OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise SymbolicLink from None  # swapped in after the lstat
        raise


def _refuse_opened(st: os.stat_result, info: os.stat_result, cap: int) -> None:
    """The descriptor's `fstat` must show the same regular file the `lstat` saw, within the cap."""
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(st.st_mode)
    if (st.st_dev, st.st_ino) != (info.st_dev, info.st_ino):
        raise Changed
    if st.st_size > cap:
        raise TooLarge(st.st_size, cap)


def _read_capped(fd: int, cap: int) -> bytes:
    """At most cap + 1 bytes: a file that grew past the cap while it was read is refused."""
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
    text = os.fspath(path)
    if not text.startswith("/"):
        text = os.path.join(os.getcwd(), text)
    return _ConfinedWalk(text, str(root)).resolve()


class _ConfinedWalk:
    """One resolution of `confined_realpath`: the components (and `_Check` markers) left to
    walk, where it stands, and the first link inside the root that it followed."""

    __slots__ = ("base", "current", "entered", "links", "text", "todo")

    def __init__(self, text: str, base: str) -> None:
        self.text = text
        self.base = base
        self.todo: list[str | _Check] = list(reversed(text.split("/")))
        self.current = "/"
        self.entered: str | None = None
        self.links = 0

    def resolve(self) -> str:
        while self.todo:
            name = self.todo.pop()
            if isinstance(name, _Check):
                if not within(self.current, self.base):
                    raise OutsideRoot(name.link)
            elif name == "..":
                self.current = os.path.dirname(self.current)
            elif name not in ("", "."):
                self._step(os.path.join(self.current, name))
        return self.current

    def _step(self, candidate: str) -> None:
        try:
            info = os.lstat(candidate)
        except OSError:
            self.current = candidate
            return
        if stat.S_ISLNK(info.st_mode):
            self._follow(candidate)
        else:
            self.current = candidate

    def _follow(self, link: str) -> None:
        inside = within(link, self.base)
        if not inside and self.entered is not None:
            raise OutsideRoot(self.entered)  # never the link outside: its name is not ours to tell
        self.links += 1
        if self.links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), self.text)
        target = os.readlink(link)
        if inside:
            self.entered = self.entered or link
            # Once the target is walked, the walk must stand inside the root again.
            self.todo.append(_Check(self.entered))
        if target.startswith("/"):
            self.current = "/"
        self.todo.extend(reversed(target.split("/")))


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
