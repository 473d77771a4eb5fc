"""Every rendered authorized_keys is read back before anything is staged.

A file that is not exactly its channel's validated keys (see provisioner.authorized_keys)
must never reach sshd: the channel is taken out of this run, refused with the reason, and
keeps what it had. Channels not rendered in this run were checked when they were.
"""

from __future__ import annotations

import logging

from provisioner.authorized_keys import AuthorizedKeysMismatch, check_rendering
from provisioner.plan import ChannelAction, ChannelPlan
from provisioner.reconcile import Reconciliation
from provisioner.render import Channel, expected_keys

# The logger's name is the event operators see (provisioner.logs): it stayed the module's name
# when apply became a package.
_log = logging.getLogger("provisioner.apply")


def abort_misrendered(rec: Reconciliation) -> list[str]:
    """Take every channel whose rendered authorized_keys is not its keys out of `rec`; the
    reasons, one per channel taken out."""
    aborted: list[str] = []
    for channel in list(rec.accepted):
        for node in rec.channel_nodes.get(channel.qid, []):
            if node.role != "authorized-keys" or node.content is None:
                continue
            try:
                check_rendering(node.content, expected_keys(channel.result.keys))
            except AuthorizedKeysMismatch as exc:
                reason = (
                    f"internal error: the rendered authorized_keys of {channel.user} is not "
                    f"its validated keys ({exc}); nothing of this channel was written"
                )
                _log.error("%s", reason)
                _take_out(rec, channel, reason)
                aborted.append(reason)
    return aborted


def _take_out(rec: Reconciliation, channel: Channel, reason: str) -> None:
    qid = channel.qid
    for node in rec.channel_nodes.pop(qid, []):
        rec.tree.nodes.pop(node.path, None)
    rec.plan.changes = [c for c in rec.plan.changes if c.channel != channel.key]
    rec.accepted.remove(channel)
    # Its keys were not applied: recording them would give them to a channel that never had them.
    rec.channel_keys.pop(qid, None)
    rec.refusals[qid] = [reason]
    rec.plan.channels = [
        ChannelPlan(
            qid.enterprise_number,
            channel.user,
            channel.registration.sender,
            ChannelAction.REFUSED,
            channel.display,
            (reason,),
            quality_type=qid.quality_type,
        )
        if p.qid == qid
        else p
        for p in rec.plan.channels
    ]
