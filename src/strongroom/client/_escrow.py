"""Sealing escrow copies on the device, while the organisation's policy asks for them.

Rules (docs/lawful-access.md):

1. Only a verified policy with ``escrow`` on and the custodians' key S turns sealing on;
   the device shows that escrow is on (``policy_in_force``).
2. Per scope (conversation, UTC day of sending) the device draws e once, keeps only
   K = KDF(e·P) and E in its encrypted store, and seals each message it sends in that
   scope under K, bound to its device id and the message id.
3. What is sealed is the message as a person reads it (sender, time, text, the target of
   an edit or reaction, a file's name, size and hash) and never a key: attachments'
   keys, session keys and receipts are not escrowed.
4. The sealed copy reaches the server before the message is sent; if it cannot, the
   message is not sent.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from strongroom import proto
from strongroom.crypto import _escrow as escrow

from ._policy import stored_policy
from ._store import LocalStore

__all__ = ["escrow_copy"]


class _ScopeKey(msgspec.Struct, frozen=True, array_like=True):
    ephemeral: bytes
    key: bytes


def _content(content: proto.UserContent) -> dict[str, object] | None:
    if isinstance(content, proto.Text):
        return {"kind": "text", "text": content.body, "target": content.reply_to}
    if isinstance(content, proto.Edit):
        return {"kind": "edit", "text": content.body, "target": content.target}
    if isinstance(content, proto.Reaction):
        kind = "unreaction" if content.remove else "reaction"
        return {"kind": kind, "text": content.emoji, "target": content.target}
    if isinstance(content, proto.FileRef):
        return {
            "kind": "file",
            "file_name": content.name,
            "file_size": content.size,
            "file_sha256": content.digest,
        }
    if isinstance(content, proto.Timer):
        return {"kind": "timer", "text": str(content.seconds or "off")}
    return None  # receipts are not escrowed


def escrow_copy(
    store: LocalStore,
    *,
    device_id: str,
    user: str,
    org: str,
    conversation: str,
    message_id: bytes,
    content: proto.UserContent,
    sent_at: int,
    members: set[str],
) -> proto.EscrowCopy | None:
    """The sealed copy this message needs, or None when escrow is off (rule 1)."""
    policy = stored_policy(store)
    if policy is None or not policy.rules.escrow or policy.escrow_key is None:
        return None
    fields = _content(content)
    if fields is None:
        return None
    day = dt.datetime.fromtimestamp(sent_at / 1000, dt.UTC).date().isoformat()
    meta = f"escrow:{conversation}:{day}"
    kept = store.get_meta(meta)
    if kept is None:
        h = escrow.scope_scalar(org, conversation, day)
        _, ephemeral, key = escrow.new_ephemeral(policy.escrow_key, h)
        scope = _ScopeKey(ephemeral, key)
        store.set_meta(meta, msgspec.msgpack.encode(scope))
    else:
        scope = msgspec.msgpack.decode(kept, type=_ScopeKey)
    sealed_content = msgspec.convert(
        {
            "from_user": user,
            "from_device": device_id,
            "conversation": conversation,
            "message_id": message_id,
            "sent_at": sent_at,
            **{k: v for k, v in fields.items() if v is not None},
        },
        proto.SealedContent,
    )
    sealed = escrow.seal_copy(
        scope.key,
        escrow.copy_aad(device_id, message_id),
        msgspec.msgpack.encode(sealed_content),
    )
    return proto.EscrowCopy(
        conversation=conversation,
        day=day,
        ephemeral=scope.ephemeral,
        message_id=message_id,
        sealed=sealed,
        members=sorted(members),
    )
