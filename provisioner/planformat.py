"""Renderings of a plan: text for a terminal, JSON for tools, Markdown for a pull request.

Every format has a summary form (`summary_only`): the counts and one line per channel that
changes, without the path changes. Markdown is kept under `max_chars` (a pull-request comment
holds 65,536 characters): what does not fit is left out, most important first kept (refused,
removed, changed, then created channels; the host-wide files before the channels' files), and
a note says what was left out and where the full plan is.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

from provisioner.plan import ChannelAction, ChannelPlan, PathAction, PathChange, Plan

FORMATS = ("text", "json", "markdown")
# Under GitHub's 65,536-character comment limit, with room for a header a CI job adds.
MARKDOWN_LIMIT = 60_000

_SYMBOL = {
    ChannelAction.CREATE: "+",
    ChannelAction.CHANGE: "~",
    ChannelAction.REMOVE: "-",
    ChannelAction.UNCHANGED: "=",
    ChannelAction.REFUSED: "!",
}
# What a reviewer must see first when not everything fits.
_PRIORITY = {
    ChannelAction.REFUSED: 0,
    ChannelAction.REMOVE: 1,
    ChannelAction.CHANGE: 2,
    ChannelAction.CREATE: 3,
    ChannelAction.UNCHANGED: 4,
}


def summary(plan: Plan) -> str:
    c = plan.counts()
    files = len(plan.changes)
    # A declaration that cannot say whose it is counts as refused too.
    refused = c["refused"] + len({r.split(":", 1)[0] for r in plan.unidentified})
    return (
        f"{c['create']} to create, {c['change']} to change, {c['remove']} to remove, "
        f"{c['unchanged']} unchanged, {refused} refused; "
        f"{files} path change{'s' if files != 1 else ''}"
    )


UNIDENTIFIED = "Refused declarations (which quality they declare cannot be told):"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def path_facts(change: PathChange) -> tuple[str, ...]:
    """What a reviewer reads next to a path: the change's own details (owner or mode moving,
    what is archived) and, for what is created or rewritten, the owner, group and mode it
    gets. Numeric, as the host's passwd and group will resolve them."""
    facts = change.details
    after = change.after
    wanted = change.action in (PathAction.CREATE, PathAction.UPDATE, PathAction.REPLACE)
    if wanted and after is not None and not any(d.startswith(("owner", "mode")) for d in facts):
        facts = (*facts, f"owner {after.owner}:{after.group}, mode {after.mode:04o}")
    return facts


def _changes_by_channel(plan: Plan) -> dict[str | None, list[PathChange]]:
    out: dict[str | None, list[PathChange]] = {}
    for change in plan.changes:
        out.setdefault(change.channel, []).append(change)
    return out


def _keys_of(ch: ChannelPlan) -> tuple[str, ...]:
    """The names a channel's path changes may carry: its quality identity as text
    (`0403170701/employer_nsso`), or its enterprise number (plans of earlier releases)."""
    qid = getattr(ch, "qid", None)
    return (str(qid), ch.enterprise_number) if qid is not None else (ch.enterprise_number,)


def _pop_changes(
    per_channel: dict[str | None, list[PathChange]], ch: ChannelPlan
) -> list[PathChange]:
    out: list[PathChange] = []
    for key in _keys_of(ch):
        out.extend(per_channel.pop(key, []))
    return out


def _listed(plan: Plan) -> list[ChannelPlan]:
    """The channels a summary lists, most important first (stable within each kind)."""
    shown = [c for c in plan.channels if c.action is not ChannelAction.UNCHANGED]
    return sorted(shown, key=lambda c: _PRIORITY[c.action])


# --- text ----------------------------------------------------------------------------------


def _channel_line(ch: ChannelPlan) -> str:
    sender = ch.sender_number or "------"
    user = ch.technical_user or "?"
    line = (
        f"  {_SYMBOL[ch.action]} {ch.action.value:<9} {sender}  {user:<20} {ch.enterprise_number}"
    )
    if ch.source:
        line += f"  ({ch.source})"
    return line


def render_text(
    plan: Plan, *, diffs: bool = True, unchanged: bool = False, summary_only: bool = False
) -> str:
    out = ["Channels:"]
    out += _text_channels(plan, unchanged=unchanged)
    out += _text_path_changes(plan, diffs=diffs, summary_only=summary_only)
    out += _text_unknown_files(plan, summary_only=summary_only)
    out.extend(f"note: {note}" for note in plan.notes)
    guard = _guard_line(plan)
    if guard:
        out.append(f"removal guard: {guard}")
    out.append("")
    out.append(("Plan: " if plan.has_changes else "No changes. ") + summary(plan))
    return "\n".join(out) + "\n"


def _text_channels(plan: Plan, *, unchanged: bool) -> list[str]:
    """One line per channel shown (and its reasons), then the declarations refused unread."""
    out: list[str] = []
    shown = [c for c in plan.channels if unchanged or c.action is not ChannelAction.UNCHANGED]
    for ch in shown:
        out.append(_channel_line(ch))
        out.extend(f"      {reason}" for reason in ch.reasons)
    hidden = len(plan.channels) - len(shown)
    if hidden:
        out.append(f"  ({hidden} unchanged channel{'s' if hidden != 1 else ''} not shown)")
    if plan.unidentified:
        out.append(UNIDENTIFIED)
        out.extend(f"  ! {reason}" for reason in plan.unidentified)
    return out


def _text_path_changes(plan: Plan, *, diffs: bool, summary_only: bool) -> list[str]:
    """Every path change with its facts, then the diffs of what is created or updated."""
    if not plan.changes:
        return []
    if summary_only:
        return ["", f"({_plural(len(plan.changes), 'path change')} on the host not shown)"]
    out = ["", "Changes on the host:"]
    for change in plan.changes:
        facts = path_facts(change)
        details = f" ({'; '.join(facts)})" if facts else ""
        out.append(f"  {change.action.value:<8} {change.kind:<4} {change.path}{details}")
    if diffs:
        for change in plan.changes:
            if change.diff and change.action in (PathAction.CREATE, PathAction.UPDATE):
                out.append("")
                out.append(change.diff.rstrip("\n"))
    return out


def _text_unknown_files(plan: Plan, *, summary_only: bool) -> list[str]:
    if not plan.unknown:
        return []
    if summary_only:
        return ["", f"({_plural(len(plan.unknown), 'unknown file')} in managed directories)"]
    out = ["", "Unknown files in managed directories (reported, never deleted):"]
    out.extend(f"  ? {path}" for path in plan.unknown)
    return out


# --- JSON ----------------------------------------------------------------------------------


def render_json(plan: Plan, *, summary_only: bool = False) -> str:
    data = summary_json(plan) if summary_only else plan.to_json()
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def summary_json(plan: Plan) -> dict[str, Any]:
    """The counts and the channels that change, without path changes: not a saved plan
    (`apply --plan` needs the whole plan, which `--out` writes)."""
    full = plan.to_json()
    per_channel = _changes_by_channel(plan)
    counted = {id(ch): len(_pop_changes(per_channel, ch)) for ch in plan.channels}
    return {
        "format": full["format"],
        "summary": True,
        "created_at": plan.created_at,
        "root": plan.root,
        "has_changes": plan.has_changes,
        "counts": plan.counts(),
        "path_changes": len(plan.changes),
        "host_path_changes": len(per_channel.get(None, [])),
        "unknown_files": len(plan.unknown),
        "channels": [
            {
                "action": ch.action.value,
                "enterprise_number": ch.enterprise_number,
                "quality_type": ch.quality_type,
                "technical_user": ch.technical_user,
                "sender_number": ch.sender_number,
                "source": ch.source,
                "reasons": list(ch.reasons),
                "path_changes": counted[id(ch)],
            }
            for ch in _listed(plan)
        ],
        "unidentified": list(plan.unidentified),
        "notes": list(plan.notes),
        "removal_guard": full["removal_guard"],
        "owners_managed": plan.owners_managed,
        "fingerprints": full["fingerprints"],
    }


# --- Markdown ------------------------------------------------------------------------------


class _Budget:
    """Lines of a Markdown document that must stay under a number of characters."""

    def __init__(self, limit: int | None, reserve: int) -> None:
        self.lines: list[str] = []
        self.used = 0
        self.limit = None if not limit else max(limit - reserve, 0)

    def fits(self, lines: Iterable[str]) -> bool:
        if self.limit is None:
            return True
        return self.used + sum(len(ln) + 1 for ln in lines) <= self.limit

    def add(self, *lines: str) -> bool:
        """Add all of `lines` if they fit (and say whether they did)."""
        if not self.fits(lines):
            return False
        self.lines.extend(lines)
        self.used += sum(len(ln) + 1 for ln in lines)
        return True

    def force(self, *lines: str) -> None:
        self.lines.extend(lines)
        self.used += sum(len(ln) + 1 for ln in lines)

    def share(self, fraction: float) -> _Budget:
        """A part of what is left, so that one section cannot crowd out the next."""
        rest = None if self.limit is None else int((self.limit - self.used) * fraction)
        return _Budget(rest, 0)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    """Inline code whatever the text holds (a run of backticks, a bar in a table)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text.replace('|', '&#124;')}{pad}{ticks}"


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    return "`" * max(3, longest + 1)


def _channel_row(ch: ChannelPlan) -> str:
    return (
        f"| {_SYMBOL[ch.action]} | **{ch.action.value}** | "
        f"{ch.sender_number or ''} | `{ch.technical_user or '?'}` | "
        f"{ch.enterprise_number} | {_md_escape(ch.source or '')} |"
    )


def _path_line(change: PathChange) -> str:
    facts = path_facts(change)
    details = f" ({_md_escape('; '.join(facts))})" if facts else ""
    return f"- {change.action.value} {_code(change.path)}{details}"


def _details_block(title: str, changes: list[PathChange], *, diffs: bool) -> list[str]:
    lines = ["<details>", f"<summary>{title}</summary>", ""]
    lines.extend(_path_line(c) for c in changes)
    if diffs:
        for change in changes:
            if change.diff:
                fence = _fence(change.diff)
                lines += ["", f"{fence}diff", change.diff.rstrip("\n"), fence]
    lines += ["", "</details>"]
    return lines


def _channel_title(ch: ChannelPlan, n: int) -> str:
    who = html.escape(ch.technical_user or "?")
    return (
        f"{_SYMBOL[ch.action]} {ch.action.value} <code>{who}</code> "
        f"{html.escape(ch.enterprise_number)}: {_plural(n, 'path change')}"
    )


def _where_full(full_plan: str | None) -> str:
    if not full_plan:
        return (
            "for the full plan, run `provisioner plan` with `--format text`, or save it with "
            "`--out PLAN.json`"
        )
    if re.match(r"https?://", full_plan):
        return f"the full plan: [{_md_escape(full_plan)}]({full_plan.replace(')', '%29')})"
    return f"the full plan (JSON, every diff): {_code(full_plan)}"


class _LeftOut:
    """What a shortened Markdown plan does not show, counted by kind in the order met."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __str__(self) -> str:
        return ", ".join(_plural(n, what) for what, n in self.counts.items())


def render_markdown(
    plan: Plan,
    *,
    summary_only: bool = False,
    diffs: bool = True,
    max_chars: int | None = MARKDOWN_LIMIT,
    full_plan: str | None = None,
) -> str:
    """Fit for a pull-request comment: the counts, a table of the channels that change, then
    each channel's path changes (owners, modes, diffs) folded away in `<details>`.

    `max_chars` (None or 0: no limit) bounds the whole text; `full_plan` says where the whole
    plan is (a file written with `--out`, or the URL of a CI artifact) in the note that says
    what was left out.
    """
    where = _where_full(full_plan)
    budget = _Budget(max_chars, reserve=600 + len(where))
    left = _LeftOut()
    _md_header(budget, plan)
    # Why a quality is refused first: the exit code is 1 because of them.
    _md_refusals(budget, plan, left)
    listed = _listed(plan)
    _md_channel_table(budget, listed, left, summary_only=summary_only)
    if not summary_only:
        _md_path_details(budget, plan, listed, left, diffs=diffs)
        _md_unknown_files(budget, plan, left)
    elif plan.changes:
        budget.force(f"_{_plural(len(plan.changes), 'path change')} not shown in this summary_")

    if left:
        limit = f"{max_chars:,}" if max_chars else "its"
        budget.force(
            "",
            f"> :scissors: **Shortened to stay under {limit} characters**: {left} not shown "
            f"(the counts above are complete); {where}.",
        )
    elif summary_only and plan.changes:
        budget.force("", f"> {where[0].upper()}{where[1:]}.")
    return "\n".join(budget.lines) + "\n"


def _md_header(budget: _Budget, plan: Plan) -> None:
    """The counts, the removal guard and the notes: always shown, whatever the limit."""
    c = plan.counts()
    budget.force(
        f"### sftp-provisioner plan: {summary(plan)}",
        "",
        "| create | change | remove | unchanged | refused | path changes | unknown files |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c['create']:,} | {c['change']:,} | {c['remove']:,} | {c['unchanged']:,} | "
        f"{c['refused']:,} | {len(plan.changes):,} | {len(plan.unknown):,} |",
        "",
    )
    guard = _guard_line(plan)
    if guard:
        mark = ":no_entry: " if plan.removal_guard and plan.removal_guard.refused else ""
        budget.force(f"> {mark}**removal guard**: {_md_escape(guard)}", "")
    for note in plan.notes:
        # Notes are few; a long one (a list of files) is cut, the counts above stay exact.
        text = note if len(note) <= 1_000 else note[:1_000] + " …"
        budget.force(f"> {_md_escape(text)}", "")


def _md_refusals(budget: _Budget, plan: Plan, left: _LeftOut) -> None:
    """The refused channels with their reasons, then the declarations refused unread."""
    part = budget.share(0.5)
    for ch in plan.refused:
        lines = [f"- :no_entry: **{ch.technical_user or ch.enterprise_number}** refused:"]
        lines.extend(f"  - {_md_escape(r)}" for r in ch.reasons)
        if not (part.add(*lines) and budget.add(*lines)):
            left.add("refusal")
    if plan.unidentified:
        budget.add(f"- :no_entry: {UNIDENTIFIED}")
        for i, reason in enumerate(plan.unidentified):
            line = f"  - {_md_escape(reason)}"
            if not (part.add(line) and budget.add(line)):
                left.add("refused declaration", len(plan.unidentified) - i)
                break
    if plan.refused or plan.unidentified:
        budget.force("")


def _md_channel_table(
    budget: _Budget, listed: list[ChannelPlan], left: _LeftOut, *, summary_only: bool
) -> None:
    if not listed:
        return
    budget.force(
        "| | action | sender | technical user | enterprise number | declaration |",
        "|---|---|---|---|---|---|",
    )
    # With details to come, at most half of what is left: the host-wide files' diffs
    # (the sshd configuration) and some channels' details must still fit.
    table = budget.share(1.0 if summary_only else 0.5)
    for i, ch in enumerate(listed):
        row = _channel_row(ch)
        if not (table.add(row) and budget.add(row)):
            left.add("channel", len(listed) - i)
            break
    budget.force("")


def _detail_blocks(plan: Plan, listed: list[ChannelPlan]) -> list[tuple[str, list[PathChange]]]:
    """The path changes as folded blocks: host-wide files first, then each listed channel's."""
    per_channel = _changes_by_channel(plan)
    blocks: list[tuple[str, list[PathChange]]] = []
    host = per_channel.pop(None, [])
    if host:
        blocks.append((f"host-wide files: {_plural(len(host), 'path change')}", host))
    for ch in listed:
        changes = _pop_changes(per_channel, ch)
        if changes:
            blocks.append((_channel_title(ch, len(changes)), changes))
    for en, changes in per_channel.items():  # a path of a channel the plan does not list
        blocks.append((f"<code>{html.escape(str(en))}</code>", changes))
    return blocks


def _md_path_details(
    budget: _Budget, plan: Plan, listed: list[ChannelPlan], left: _LeftOut, *, diffs: bool
) -> None:
    for title, changes in _detail_blocks(plan, listed):
        if budget.add(*_details_block(title, changes, diffs=diffs)):
            continue
        # Without its diffs, a channel's owners and modes may still fit.
        if diffs and budget.add(*_details_block(title + " (diffs left out)", changes, diffs=False)):
            left.add("diff", sum(1 for x in changes if x.diff))
            continue
        left.add("path change", len(changes))


def _md_unknown_files(budget: _Budget, plan: Plan, left: _LeftOut) -> None:
    if not plan.unknown:
        return
    budget.force("", "**Unknown files** (reported, never deleted):")
    for i, path in enumerate(plan.unknown):
        if not budget.add(f"- {_code(path)}"):
            left.add("unknown file", len(plan.unknown) - i)
            break


def _guard_line(plan: Plan) -> str | None:
    """The mass-removal guard's verdict, shown whenever the plan removes a channel."""
    from provisioner.guard import verdict

    guard = plan.removal_guard
    if guard is None or not guard.removals:
        return None
    return verdict(guard)


def render(
    plan: Plan,
    fmt: str,
    *,
    diffs: bool = True,
    summary_only: bool = False,
    max_chars: int | None = MARKDOWN_LIMIT,
    full_plan: str | None = None,
) -> str:
    if fmt == "json":
        return render_json(plan, summary_only=summary_only)
    if fmt == "markdown":
        return render_markdown(
            plan, summary_only=summary_only, diffs=diffs, max_chars=max_chars, full_plan=full_plan
        )
    return render_text(plan, diffs=diffs, summary_only=summary_only)
