"""Renderings of a plan: text for a terminal, JSON for tools, Markdown for a pull request."""

from __future__ import annotations

import json

from provisioner.plan import ChannelAction, PathAction, Plan

FORMATS = ("text", "json", "markdown")

_SYMBOL = {
    ChannelAction.CREATE: "+",
    ChannelAction.CHANGE: "~",
    ChannelAction.REMOVE: "-",
    ChannelAction.UNCHANGED: "=",
    ChannelAction.REFUSED: "!",
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


def _channel_line(ch: object) -> str:
    from provisioner.plan import ChannelPlan

    assert isinstance(ch, ChannelPlan)
    sender = ch.sender_number or "------"
    user = ch.technical_user or "?"
    line = (
        f"  {_SYMBOL[ch.action]} {ch.action.value:<9} {sender}  {user:<20} {ch.enterprise_number}"
    )
    if ch.source:
        line += f"  ({ch.source})"
    return line


def render_text(plan: Plan, *, diffs: bool = True, unchanged: bool = False) -> str:
    out = ["Channels:"]
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
    if plan.changes:
        out.append("")
        out.append("Changes on the host:")
        for change in plan.changes:
            details = f" ({'; '.join(change.details)})" if change.details else ""
            out.append(f"  {change.action.value:<8} {change.kind:<4} {change.path}{details}")
        if diffs:
            for change in plan.changes:
                if change.diff and change.action in (PathAction.CREATE, PathAction.UPDATE):
                    out.append("")
                    out.append(change.diff.rstrip("\n"))
    if plan.unknown:
        out.append("")
        out.append("Unknown files in managed directories (reported, never deleted):")
        out.extend(f"  ? {path}" for path in plan.unknown)
    for note in plan.notes:
        out.append(f"note: {note}")
    guard = _guard_line(plan)
    if guard:
        out.append(f"removal guard: {guard}")
    out.append("")
    out.append(("Plan: " if plan.has_changes else "No changes. ") + summary(plan))
    return "\n".join(out) + "\n"


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=2, ensure_ascii=False) + "\n"


def render_markdown(plan: Plan) -> str:
    """Fit for a pull-request comment: a table, then each diff folded away."""
    out = [f"### sftp-provisioner plan: {summary(plan)}", ""]
    # Unchanged channels are left out; with nothing else, no (empty) table at all.
    listed = [c for c in plan.channels if c.action is not ChannelAction.UNCHANGED]
    if listed:
        out += [
            "| | action | sender | technical user | enterprise number | declaration |",
            "|---|---|---|---|---|---|",
        ]
        for ch in listed:
            out.append(
                f"| {_SYMBOL[ch.action]} | **{ch.action.value}** | "
                f"{ch.sender_number or ''} | `{ch.technical_user or '?'}` | "
                f"{ch.enterprise_number} | {_md_escape(ch.source or '')} |"
            )
        out.append("")
    for ch in plan.refused:
        out.append(f"- :no_entry: **{ch.technical_user or ch.enterprise_number}** refused:")
        out.extend(f"  - {_md_escape(r)}" for r in ch.reasons)
    if plan.unidentified:
        out.append(f"- :no_entry: {UNIDENTIFIED}")
        out.extend(f"  - {_md_escape(r)}" for r in plan.unidentified)
    if plan.refused or plan.unidentified:
        out.append("")
    for change in plan.changes:
        details = f" ({'; '.join(change.details)})" if change.details else ""
        if change.diff:
            fence = "````" if "```" in change.diff else "```"
            out += [
                "<details>",
                f"<summary>{change.action.value} <code>{change.path}</code>{details}</summary>",
                "",
                f"{fence}diff",
                change.diff.rstrip("\n"),
                fence,
                "",
                "</details>",
            ]
        else:
            out.append(f"- {change.action.value} `{change.path}`{details}")
    if plan.unknown:
        out += ["", "**Unknown files** (reported, never deleted):"]
        out.extend(f"- `{p}`" for p in plan.unknown)
    for note in plan.notes:
        out.append(f"> {note}")
    guard = _guard_line(plan)
    if guard:
        mark = ":no_entry: " if plan.removal_guard and plan.removal_guard.refused else ""
        out.append(f"> {mark}**removal guard**: {guard}")
    return "\n".join(out) + "\n"


def _guard_line(plan: Plan) -> str | None:
    """The mass-removal guard's verdict, shown whenever the plan removes a channel."""
    from provisioner.guard import verdict

    guard = plan.removal_guard
    if guard is None or not guard.removals:
        return None
    return verdict(guard)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render(plan: Plan, fmt: str) -> str:
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan)
    return render_text(plan)
