"""Reading a declaration: YAML text to plain data, keeping the position of every node.

The C parser's `compose` gives nodes with line and column at a fraction of the cost of the
round-trip loader, so we compose and convert the node tree ourselves. Doing the conversion here
also lets us refuse, with a location, what a declaration has no use for and what could hurt the
gate: aliases (billion-laughs bombs), custom tags, duplicate keys, non-string keys, deep nesting.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import ruamel.yaml.main
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    CollectionEndEvent,
    CollectionStartEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

from provisioner.diagnostics import Diagnostic, Location, error
from provisioner.safefile import (
    OutsideRoot,
    Refused,
    TooLarge,
    confined_realpath,
    read_regular,
    shown_name,
    within,
)

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
# A declaration has a handful of keys per mapping and a few dozen entries in its longest list
# (ssh_keys, administrators, applications): these bounds are far above any real one, and keep
# the work on a hostile file linear and small. Without them a 1 MiB file could hold 500,000
# values, which took seconds to compose and convert and gave as many diagnostics.
MAX_ENTRIES = 1000  # entries of one list, keys of one mapping
MAX_NODES = 20_000  # values in the whole document (keys count as values)

YamlPath = tuple[str | int, ...]

_STANDARD = "tag:yaml.org,2002:"
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
# Dates stay text: pydantic parses them where a field wants a date, and a quoted or unquoted
# date then means the same thing.
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(slots=True)
class PositionMap:
    """Where each value (and each mapping key) of a document starts, by YAML path (0-based)."""

    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: YamlPath, *, key: bool = False) -> tuple[YamlPath, int, int]:
        """The deepest known node on `path`: a missing field is reported at its parent."""
        probe = tuple(path)
        while True:
            table = self.keys if key else self.values
            if probe in table:
                line, col = table[probe]
                return probe, line, col
            if key and probe in self.values:
                line, col = self.values[probe]
                return probe, line, col
            if not probe:
                return (), 0, 0
            probe = probe[:-1]
            # The parent of a missing key is best shown at its own key ("contact:"), not at
            # the first child of the mapping.
            key = True


@dataclass(slots=True)
class SourceDocument:
    path: Path
    display: str
    data: Any
    positions: PositionMap

    def location(self, path: YamlPath, *, key: bool = False) -> Location:
        found, line, col = self.positions.position(path, key=key)
        shown = path if len(path) >= len(found) else found
        return Location(self.display, line, col, format_path(shown))


class _Refused(Exception):
    def __init__(self, code: str, message: str, line: int, col: int, path: YamlPath):
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line
        self.col = col
        self.path = path


class _Resolver(VersionedResolver):
    """The stock resolver, asking for the document's YAML version once instead of per node.

    `VersionedResolver.resolve` reads `processing_version` twice for every node, and with the
    C parser each read goes through two failed attribute lookups; that was an eighth of the
    cost of checking a declaration. The C parser ignores %YAML directives, so the answer
    cannot change within a document (the resolver is made anew for every document).
    """

    _version: Any = None
    # The implicit-resolver table of each YAML version, built once per process instead of
    # once per document. `resolve` extends the list it finds under None in place, so a table
    # with such an entry is not shared (the stock 1.1 and 1.2 tables have none).
    _tables: ClassVar[dict[Any, Any]] = {}
    # Per shared table: first character -> ((tag, match), ...), with shared tag objects and the
    # expressions' own match methods (ruamel keeps each expression behind a lazy wrapper whose
    # every attribute lookup runs Python code).
    _matchers: ClassVar[dict[int, dict[str, tuple[tuple[Tag, Any], ...]]]] = {}
    # This document's matchers, found on its first plain scalar; False: use the stock method.
    _doc_matchers: Any = None

    @property
    def processing_version(self) -> Any:
        if self._version is None:
            self._version = VersionedResolver.processing_version.fget(self)  # type: ignore[attr-defined]
        return self._version

    @property
    def versioned_resolver(self) -> Any:
        version = self.processing_version
        table = self._tables.get(version)
        if table is None:
            table = VersionedResolver.versioned_resolver.fget(self)  # type: ignore[attr-defined]
            if None not in table:
                self._tables[version] = table
        return table

    def _find_matchers(self) -> Any:
        table = self.versioned_resolver
        if None in table:
            return False  # not a shared table (see _tables)
        matchers = self._matchers.get(id(table))
        if matchers is None:
            matchers = self._matchers[id(table)] = {
                first: tuple((_resolved_tag(tag), regexp.match) for tag, regexp in entries)
                for first, entries in table.items()
            }
        return matchers

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """`VersionedResolver.resolve`, answering with shared tag objects.

        The composer calls this once per node, and the stock method builds a new `Tag` for
        every plain scalar it recognises; here each tag is built once per process and the
        lookups are done once per document. Where the stock method would take a path this
        one does not cover (path resolvers, a table with catch-all entries), it is called
        instead, so the answer is always the stock one.
        """
        if self.yaml_path_resolvers:
            return VersionedResolver.resolve(self, kind, value, implicit)
        if kind is ScalarNode:
            if implicit[0]:
                matchers = self._doc_matchers
                if matchers is None:
                    matchers = self._doc_matchers = self._find_matchers()
                if matchers is False:
                    return VersionedResolver.resolve(self, kind, value, implicit)
                for tag, match in matchers.get(value[0] if value else "", ()):
                    if match(value):
                        return tag
            return self.DEFAULT_SCALAR_TAG
        if kind is SequenceNode:
            return self.DEFAULT_SEQUENCE_TAG
        if kind is MappingNode:
            return self.DEFAULT_MAPPING_TAG
        return None


# Tags handed out by `_Resolver.resolve`, by name: never changed once built, so shared by all
# the nodes that carry them.
_RESOLVED_TAGS: dict[str, Tag] = {}


def _resolved_tag(name: str) -> Tag:
    tag = _RESOLVED_TAGS.get(name)
    if tag is None:
        tag = _RESOLVED_TAGS[name] = Tag(suffix=name)
        _TAG_NAMES[id(tag)] = str(tag)
    return tag


# The name of each shared tag object, by identity: reading `Node.tag` builds the string anew
# on every read. Tags the document writes itself (!!str, !custom) are new objects, not found
# here, and read through `Node.tag`.
_TAG_NAMES: dict[int, str] = {
    id(tag): str(tag)
    for tag in (
        VersionedResolver.DEFAULT_SCALAR_TAG,
        VersionedResolver.DEFAULT_SEQUENCE_TAG,
        VersionedResolver.DEFAULT_MAPPING_TAG,
    )
}


@cache
def _shared_yaml() -> YAML:
    # Building a YAML object looks for plug-ins on disk (a glob): once per process, not per
    # file. compose() and parse() make their loader anew for every document.
    yaml = YAML(typ="safe", pure=False)
    yaml.Resolver = _Resolver
    return yaml


def _yaml() -> YAML:
    yaml = _shared_yaml()
    yaml.doc_infos.clear()  # compose() appends one per document
    return yaml


@cache
def _composer_class() -> Any:
    """The C parser with our resolver, as `YAML.compose` assembles it, made once per process.

    `YAML.compose` defines a new loader class for every document and also builds a
    constructor, which composing never uses: together a tenth of the cost of reading a
    declaration. None when the C parser is not in use (then `YAML.compose` is used).
    """
    yaml = _shared_yaml()
    c_parser: Any = getattr(ruamel.yaml.main, "CParser", None)
    if c_parser is None or yaml.Parser is not c_parser or yaml.Reader or yaml.Scanner:
        return None

    class _Composer(c_parser, _Resolver):  # type: ignore[misc]
        def __init__(self, stream: io.StringIO) -> None:
            c_parser.__init__(self, stream)
            self._parser = self._composer = self
            _Resolver.__init__(self, version=yaml.version, loadumper=self)

    return _Composer


def _compose(text: str) -> Node | None:
    """The node tree of the document in `text`, exactly as `YAML.compose` gives it."""
    composer = _composer_class()
    if composer is None:
        node: Node | None = _yaml().compose(io.StringIO(text))
        return node
    loader = composer(io.StringIO(text))
    try:
        root: Node | None = loader.get_single_node()
        return root
    finally:
        loader.dispose()


def _decode(raw: bytes, display: str) -> tuple[str | None, Diagnostic | None]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, error(
            "encoding",
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded); "
            "save it as UTF-8",
            Location(display, line, col),
        )


def _explained(exc: MarkedYAMLError, text: str) -> tuple[str, Any] | None:
    """A sentence for the scanner and parser errors an editor makes, with the mark it is about.

    The messages of libyaml (the C parser) and of ruamel's own parser differ in wording: both
    are matched. None for anything else, which keeps the parser's words.
    """
    problem = (exc.problem or "").lower()
    context = (exc.context or "").lower()
    start = exc.context_mark
    if "quoted scalar" in context and "end of stream" in problem and start is not None:
        # The end of the file is where it was noticed; the opening quote is the mistake.
        return "a quoted value starts here and is never closed: add the closing quote", start
    for kind, opening, closing in (("sequence", "[", "]"), ("mapping", "{", "}")):
        if f"flow {kind}" in context and start is not None:
            what = "a list" if kind == "sequence" else "a mapping"
            return (
                f"{what} in {opening} {closing} starts here and is not closed: add the "
                f"'{closing}' (or a ',' between its items)",
                start,
            )
    if "mapping values are not allowed" in problem:
        return (
            "a ':' where no new key can start: this line is indented further than the key "
            "above it, or the line above lacks its ':', or a value holds ': ' (put such a "
            "value in quotes)",
            exc.problem_mark,
        )
    if "block mapping" in context and start is not None and "expected" in problem:
        at = exc.problem_mark
        lines = text.splitlines()
        if at is not None and at.line < len(lines) and lines[at.line].lstrip().startswith("- "):
            return (
                "this list item is not indented like the items above it: its '-' must be in "
                "the same column as theirs",
                at,
            )
        return (
            "this line is not indented like the keys around it: the mapping it falls into "
            f"(from line {start.line + 1}) has its keys in column {start.column + 1}; indent "
            "each key like the other keys of its mapping, with spaces",
            exc.problem_mark,
        )
    if ("block collection" in context or "block sequence" in context) and start is not None:
        return (
            "this line is not indented like the list around it: the items of the list from "
            f"line {start.line + 1} start with '- ' in column {start.column + 1}",
            exc.problem_mark,
        )
    if "simple key" in context and "':'" in problem and start is not None:
        return "this key has no ':' after it (write 'key: value')", start
    if "cannot start any token" in problem:
        return (
            "a value cannot start with this character ('@', '`' and '%' are reserved in YAML): "
            "put the value in quotes",
            exc.problem_mark,
        )
    return None


def _yaml_error(exc: YAMLError, text: str, display: str) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, MarkedYAMLError):
        problem = exc.problem or "invalid YAML"
        start = exc.context_mark
        explained = _explained(exc, text)
        if explained is not None:
            problem, mark = explained[0], explained[1] or mark
        elif exc.context and start is not None and mark is not None and start.line != mark.line:
            # Where the construct began is usually where the mistake is (an unclosed quote).
            problem = f"{exc.context} on line {start.line + 1}: {problem}"
        elif exc.context:
            problem = f"{exc.context}: {problem}"
    else:
        problem = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
    line = getattr(mark, "line", 0) + 1 if mark is not None else 1
    col = getattr(mark, "column", 0) + 1 if mark is not None else 1
    lines = text.splitlines()
    if 0 < line <= len(lines) and "\t" in lines[line - 1][: max(col, 1)]:
        problem = "a tab character is used for indentation; YAML allows only spaces there"
    elif "another document" in str(exc):
        problem = "a declaration holds one YAML document; remove the extra '---' document"
    return error("yaml-syntax", f"invalid YAML: {problem}", Location(display, line, col))


# Every level of nesting, and every value after the first of a collection, needs one of these
# characters of its own: a flow bracket or comma, a block sequence's "-", a mapping's ":" or
# "?". A document holding at most this many can be neither nested deeply enough to matter nor
# hold more than 2 * _SCAN_FROM + 2 values (a mapping entry is two), well below MAX_NODES: it
# is composed at once, and `_convert` enforces MAX_DEPTH and MAX_ENTRIES on its small tree.
_INDICATORS = "[{-:?,"
_SCAN_FROM = 2000


@dataclass(slots=True)
class _Open:
    """A collection open in `_bounds_exceeded`'s walk: its kind, nodes so far, current key."""

    mapping: bool
    nodes: int = 0
    key: str | int = 0


def _bounds_exceeded(text: str) -> _Refused | None:
    """Where the document first goes past what a declaration may hold, if it does.

    The C composer recurses on the C stack, once per level: some 30,000 nested brackets (30 KB)
    crash the process with a segmentation fault, which no `except` can catch. And composing
    hundreds of thousands of values takes seconds before `_convert` could count them. So a
    document that could be that deep or that large is first walked as a stream of parser
    events, stopping at the first collection too deep or too long, or at the first value past
    MAX_NODES. The walk is skipped for ordinary declarations, which hold far fewer indicator
    characters.
    """
    if sum(text.count(c) for c in _INDICATORS) <= _SCAN_FROM:
        return None
    stack: list[_Open] = []
    nodes = 0
    for event in _yaml().parse(io.StringIO(text)):
        if isinstance(event, CollectionEndEvent):
            stack.pop()
            continue
        if not isinstance(event, NodeEvent):
            continue
        mark = event.start_mark
        nodes += 1
        if stack:
            parent = stack[-1]
            if parent.mapping and parent.nodes % 2 == 0:
                parent.key = event.value if isinstance(event, ScalarEvent) else "?"
            elif not parent.mapping:
                parent.key = parent.nodes
            parent.nodes += 1
            entries = (parent.nodes + 1) // 2 if parent.mapping else parent.nodes
            if entries > MAX_ENTRIES:
                path = tuple(o.key for o in stack[:-1])
                return _too_many(parent.mapping, mark.line + 1, mark.column + 1, path)
        if nodes > MAX_NODES:
            path = tuple(o.key for o in stack)
            return _Refused(
                "yaml-too-large",
                f"the YAML holds more than {MAX_NODES} values; a declaration holds far fewer",
                mark.line + 1,
                mark.column + 1,
                path,
            )
        if isinstance(event, CollectionStartEvent):
            # The root mapping is depth 1; _convert allows MAX_DEPTH levels below it.
            if len(stack) + 1 > MAX_DEPTH + 1:
                return _Refused(
                    "yaml-too-deep",
                    f"the YAML is nested more than {MAX_DEPTH} levels deep",
                    mark.line + 1,
                    mark.column + 1,
                    (),
                )
            stack.append(_Open(isinstance(event, MappingStartEvent)))
    return None


def _too_many(mapping: bool, line: int, col: int, path: YamlPath) -> _Refused:
    what = "mapping has more than {n} keys" if mapping else "list has more than {n} entries"
    return _Refused(
        "yaml-too-many",
        f"this {what.format(n=MAX_ENTRIES)}; a declaration holds at most {MAX_ENTRIES} "
        "entries in one list or mapping",
        line,
        col,
        path,
    )


def parse_document(
    raw: bytes, path: Path, display: str
) -> tuple[SourceDocument | None, list[Diagnostic]]:
    """Parse one declaration file's bytes. Never raises on any input."""
    if len(raw) > MAX_FILE_BYTES:
        return None, [
            error(
                "file-too-large",
                f"the file is {len(raw)} bytes; a declaration may be at most {MAX_FILE_BYTES} bytes",
                Location(display, 1, 1),
            )
        ]
    text, problem = _decode(raw, display)
    if problem is not None or text is None:
        return None, [problem] if problem else []
    if "\x00" in text:
        idx = text.index("\x00")
        line = text.count("\n", 0, idx) + 1
        return None, [
            error(
                "encoding",
                "the file contains a NUL byte; it is not a text file",
                Location(display, line, idx - (text.rfind("\n", 0, idx) + 1) + 1),
            )
        ]
    try:
        exceeded = _bounds_exceeded(text)
        if exceeded is not None:
            # The walk knows no paths of its own for a too-deep document: as before, none.
            shown = format_path(exceeded.path) if exceeded.code != "yaml-too-deep" else ""
            return None, [
                error(
                    exceeded.code,
                    exceeded.message,
                    Location(display, exceeded.line, exceeded.col, shown),
                )
            ]
        root = _compose(text)
    except YAMLError as exc:
        return None, [_yaml_error(exc, text, display)]
    except RecursionError:
        return None, [
            error("yaml-too-deep", "the YAML is nested too deeply", Location(display, 1, 1))
        ]
    if root is None:
        return None, [
            error(
                "empty-file",
                "the file holds no declaration (it is empty or only comments)",
                Location(display, 1, 1),
            )
        ]
    positions = PositionMap()
    try:
        data = _convert(root, (), positions, set())
    except _Refused as refused:
        return None, [
            error(
                refused.code,
                refused.message,
                Location(display, refused.line, refused.col, format_path(refused.path)),
            )
        ]
    doc = SourceDocument(path, display, data, positions)
    if not isinstance(data, dict):
        return None, [
            error(
                "not-a-mapping",
                "a declaration is a mapping with the keys quality, administrators and "
                "structured_messages",
                doc.location(()),
            )
        ]
    return doc, []


def read_source(
    path: Path, display: str, root: Path | None = None, real_parent: str | None = None
) -> tuple[bytes | None, list[Diagnostic]]:
    """Read a declaration's bytes through `safefile`; never raises, never blocks.

    With a `root` (a declaration), the file must be a regular file inside the root, reached
    only through symbolic links that stay inside it; `real_parent`, when the caller has it, is
    the resolved directory of `path`. Without one (the operator's settings file), links are
    followed wherever they lead. Either way a refused file is not read at all, so no byte of
    it can appear in a diagnostic.
    """
    at = Location(display, 1, 1)
    try:
        if root is None:
            return read_regular(path, MAX_FILE_BYTES, follow=True), []
        if real_parent is not None:
            candidate = os.path.join(real_parent, path.name)  # noqa: PTH118 - str, as realpath
            info = os.lstat(candidate)
            if not stat.S_ISLNK(info.st_mode):
                return read_regular(candidate, MAX_FILE_BYTES, info=info), []
        real = confined_realpath(path, root)
        if not within(real, str(root)):
            raise Refused("file-outside-root", "lies outside the declarations root")
        return read_regular(real, MAX_FILE_BYTES), []
    except TooLarge as exc:
        return None, [
            error(
                "file-too-large",
                f"the file is {exc.size} bytes; a declaration may be at most {MAX_FILE_BYTES} bytes",
                at,
            )
        ]
    except OutsideRoot as exc:
        if exc.link == str(path) or (
            real_parent is not None and exc.link == f"{real_parent}/{path.name}"
        ):
            reason = "is a symbolic link to a file outside the declarations root"
        else:
            link = Path(exc.link)
            inside = link.relative_to(root) if root and link.is_relative_to(root) else link
            shown = shown_name(str(inside))
            reason = (
                f"is reached through the symbolic link {shown}, which leads outside the "
                "declarations root"
            )
        return None, [error(exc.code, f"the file {reason}; it was not read", at)]
    except Refused as exc:
        return None, [error(exc.code, f"the file {exc.reason}; it was not read", at)]
    except OSError as exc:
        return None, [
            error(
                "file-unreadable",
                f"cannot read the file: {exc.strerror or 'unknown error'}",
                Location(display),
            )
        ]


def load_document(
    path: Path, display: str, root: Path | None = None
) -> tuple[SourceDocument | None, list[Diagnostic]]:
    raw, problems = read_source(path, display, root)
    if raw is None:
        return None, problems
    return parse_document(raw, path, display)


def _show_tag(tag: str) -> str:
    """A tag as it is written in the file: !!python/object, not tag:yaml.org,2002:python/object."""
    return "!!" + tag.removeprefix(_STANDARD) if tag.startswith(_STANDARD) else tag


def _convert(
    node: Node,
    path: YamlPath,
    positions: PositionMap,
    seen: set[int],
    written_at: tuple[int, int] | None = None,
) -> Any:
    """Plain data from a node; `written_at` is where the node is used (its key, its list)."""
    # Once per node of every declaration: attribute reads are kept to what each step needs.
    mark = node.start_mark
    line, col = mark.line + 1, mark.column + 1
    if len(path) > MAX_DEPTH:
        raise _Refused(
            "yaml-too-deep",
            f"the YAML is nested more than {MAX_DEPTH} levels deep",
            line,
            col,
            path,
        )
    if id(node) in seen:
        # The composer hands back the anchored node again for every alias; a declaration has
        # no use for them, and refusing them makes "billion laughs" harmless. The node's own
        # position is the anchor's; the alias is reported where it is used.
        where = written_at or (line, col)
        raise _Refused(
            "yaml-alias",
            "YAML anchors and aliases (&name, *name) are not allowed in "
            f"a declaration; write the value out (this repeats the value anchored on line {line})",
            where[0],
            where[1],
            path,
        )
    seen.add(id(node))
    positions.values.setdefault(path, (line, col))
    tag: str = _tag_of(node) or ""
    if isinstance(node, ScalarNode):
        if tag == _STR:
            value: str = node.value
            return value
        return _scalar(node, tag, path, line, col)
    if isinstance(node, SequenceNode):
        return _convert_sequence(node, tag, path, positions, seen, line, col)
    if isinstance(node, MappingNode):
        return _convert_mapping(node, tag, path, positions, seen, line, col)
    raise _Refused("yaml-tag", "unsupported YAML node", line, col, path)


def _convert_sequence(
    node: SequenceNode,
    tag: str,
    path: YamlPath,
    positions: PositionMap,
    seen: set[int],
    line: int,
    col: int,
) -> list[Any]:
    # An alias inside a list is reported at the list: the item has no key of its own.
    if tag != _SEQ:
        raise _Refused("yaml-tag", _tag_message(tag), line, col, path)
    if len(node.value) > MAX_ENTRIES:
        extra = node.value[MAX_ENTRIES].start_mark
        raise _too_many(False, extra.line + 1, extra.column + 1, path)
    here = (line, col)
    return [_convert(item, (*path, i), positions, seen, here) for i, item in enumerate(node.value)]


def _convert_mapping(
    node: MappingNode,
    tag: str,
    path: YamlPath,
    positions: PositionMap,
    seen: set[int],
    line: int,
    col: int,
) -> dict[str, Any]:
    """A mapping whose keys are plain scalars, each given once; a merge key (<<) is an alias
    in disguise and is refused as one."""
    if tag != _MAP:
        raise _Refused("yaml-tag", _tag_message(tag), line, col, path)
    if len(node.value) > MAX_ENTRIES:
        extra = node.value[MAX_ENTRIES][0].start_mark
        raise _too_many(True, extra.line + 1, extra.column + 1, path)
    result: dict[str, Any] = {}
    keys, values, names = positions.keys, positions.values, _TAG_NAMES
    for key_node, value_node in node.value:
        key_mark = key_node.start_mark
        kline, kcol = key_mark.line + 1, key_mark.column + 1
        key_tag = names.get(id(key_node.ctag)) or key_node.tag
        if id(key_node) in seen or not isinstance(key_node, ScalarNode) or key_tag in (_SEQ, _MAP):
            raise _Refused("yaml-key", "a key must be a plain name", kline, kcol, path)
        if key_tag == "tag:yaml.org,2002:merge":
            raise _Refused(
                "yaml-alias",
                "YAML merge keys (<<) are not allowed in a declaration",
                kline,
                kcol,
                path,
            )
        key = key_node.value
        if key_tag not in (_STR, _INT, _BOOL, _NULL, _FLOAT):
            raise _Refused(
                "yaml-tag",
                f"the tag {_show_tag(key_tag or '')} is not allowed on a key",
                kline,
                kcol,
                path,
            )
        child = (*path, key)
        if key in result:
            first = keys[child]
            raise _Refused(
                "duplicate-key",
                f"the key '{key}' appears twice in this mapping (first on line {first[0]})",
                kline,
                kcol,
                child,
            )
        keys[child] = (kline, kcol)
        if (
            type(value_node) is ScalarNode
            and names.get(id(value_node.ctag)) == _STR
            and id(value_node) not in seen
            and len(child) <= MAX_DEPTH
        ):
            # Most values are plain text: done here as `_convert` would do it, without
            # a call per value.
            seen.add(id(value_node))
            value_mark = value_node.start_mark
            values.setdefault(child, (value_mark.line + 1, value_mark.column + 1))
            result[key] = value_node.value
            continue
        result[key] = _convert(value_node, child, positions, seen, (kline, kcol))
    return result


def _tag_of(node: Node) -> str | None:
    """`node.tag`, without building the string when the tag is one the resolver handed out."""
    name = _TAG_NAMES.get(id(node.ctag))
    return name if name is not None else node.tag


def _scalar(node: ScalarNode, tag: str, path: YamlPath, line: int, col: int) -> Any:
    value: str = node.value
    if tag in (_STR, _TIMESTAMP):
        return value
    if tag == _INT:
        # YAML 1.2 integers: decimal (leading zeros allowed), 0o octal and 0x hexadecimal.
        for base in (10, 0):
            try:
                return int(value, base)
            except ValueError:
                continue
        return value
    if tag == _FLOAT:
        try:
            return float(value)
        except ValueError:
            return value
    if tag == _BOOL:
        return value.lower() == "true"
    if tag == _NULL:
        return None
    raise _Refused("yaml-tag", _tag_message(tag), line, col, path)


def _tag_message(tag: str) -> str:
    return f"the tag {_show_tag(tag)} is not allowed in a declaration; remove it or quote the value"


def iter_nodes(data: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, Any]]:
    yield path, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from iter_nodes(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from iter_nodes(value, (*path, i))
