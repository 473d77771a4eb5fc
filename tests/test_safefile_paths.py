"""The path tests of `provisioner.safefile` give exactly the answers of their slow definitions.

`within` and `unsafe_part` have fast paths (a prefix test, one `isprintable` pass) because the
gate asks them of every declaration and every referenced file; a fast path that disagreed with
the definition would let a path outside the root count as inside, or an unsafe name through.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from provisioner.safefile import unsafe_part, within

# Components that commonpath treats specially ("", "."), literally (".."), and ordinary ones
# that share prefixes ("a" and "ab": "/ab" is not below "/a").
component = st.sampled_from(["", ".", "..", "a", "ab", "b", "a b", "a\n"])
path_text = st.builds(
    lambda lead, parts, tail: lead + "/".join(parts) + tail,
    st.sampled_from(["/", "", "//"]),
    st.lists(component, max_size=5),
    st.sampled_from(["", "/", "/."]),
)


def _within_by_definition(path: str, root: str) -> bool | str:
    try:
        return path == root or os.path.commonpath((path, root)) == root
    except ValueError:
        return "ValueError"  # one absolute and one relative path


@given(path_text, path_text)
@example("/ab", "/a")
@example("/a/b", "/a")
@example("/a//b", "/a/b")
@example("/a/./b", "/a/b")
@example("/a/b/", "/a/b")
@example("/x", "/")
@example("x", "/")
def test_within_is_commonpath(path: str, root: str) -> None:
    try:
        got: bool | str = within(path, root)
    except ValueError:
        got = "ValueError"
    assert got == _within_by_definition(path, root)


@given(st.lists(st.text(max_size=6), min_size=1, max_size=4), st.integers(0, 4))
@example(["a\u2028b", "c"], 1)
@example(["ok", "n\nl"], 0)
def test_unsafe_part_finds_the_first_unsafe_component(names: list[str], depth: int) -> None:
    root = Path("/repo")
    parts = [n.replace("/", "_") or "_" for n in names]
    path = root.joinpath(*parts) if depth else Path("/elsewhere", *parts)
    below = path.relative_to(root).parts if path.is_relative_to(root) else path.parts
    expected = next((p for p in below if not p.isprintable()), None)
    assert unsafe_part(path, root) == expected
