"""Fleet control: what IT does to users and devices, in one place for the admin API, the
web console and the stream.

Rules:

1. Every operation that changes something is written to the audit log after it took
   effect, with who did it (``actor``: ``admin``, ``console:<address>``, ``device:<id>``);
   refused operations that say something about an attack (a failed activation, a wrong
   console password) are written too.
2. Orders that devices must believe (policies, wipe orders, disabled users, revocations)
   are signed by the authority key here and nowhere else.
3. A policy is the organisation's rules with the user's overrides on top.  Its version is
   the newest change that touches that user (an organisation change or the user's own),
   so it only grows for each user, and devices refuse anything older than what they
   enforce.  Devices are told of a change through the bus (``control``) and read the
   signed policy from their stream.
4. A wipe order revokes the device at once (nobody encrypts to it, it gets no more mail)
   but still lets it in, for the order alone: it confirms, and is marked wiped.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import TYPE_CHECKING, Any

import msgspec

from strongroom import crypto, proto
from strongroom.errors import ConflictError, NotFoundError, RemoteProtocolError

from ._audit import AuditLog
from ._errors import ApiRefusal
from .store import DeviceRow, FleetRow, PolicyChangeRow

if TYPE_CHECKING:
    from ._context import ServerContext

__all__ = ["Fleet", "iso"]

_E = proto.ErrorCode


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


class _Effective(msgspec.Struct, frozen=True):
    version: int
    at: int
    rules: proto.PolicyRules
    overrides: list[str]


class Fleet:
    """The operations; ``ctx.fleet`` is the one instance of a server."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.audit = AuditLog(ctx.store, ctx.authority, ctx.clock)

    @property
    def org(self) -> str:
        return self.ctx.config.organisation.name

    # --- users -------------------------------------------------------------------------

    async def add_user(self, user: str, name: str, actor: str) -> proto.UserInfo:
        if not proto.valid_user_id(user):
            raise ApiRefusal(
                400,
                _E.BAD_REQUEST,
                f"{user!r} is not a valid user id (lowercase letters, digits, . _ -)",
            )
        try:
            row = await self.ctx.store.add_user(user, name, self.ctx.clock())
        except ConflictError as exc:
            raise ApiRefusal(409, _E.CONFLICT, f"user {user!r} exists already") from exc
        await self.audit.record(actor, "user.add", user, {"name": name})
        return proto.UserInfo(row.user, row.name, iso(row.created_at) or "", 0)

    async def users(self) -> list[proto.UserInfo]:
        store = self.ctx.store
        counts: dict[str, int] = {}
        for d in await store.list_devices():
            if d.revoked_at is None:
                counts[d.user] = counts.get(d.user, 0) + 1
        disabled = await store.disabled_users()
        return [
            proto.UserInfo(
                u.user,
                u.name,
                iso(u.created_at) or "",
                counts.get(u.user, 0),
                iso(disabled[u.user][1]) if u.user in disabled else None,
            )
            for u in await store.list_users()
        ]

    async def issue_code(
        self, user: str, ttl_seconds: int | None, actor: str
    ) -> proto.CodeIssued:
        ctx = self.ctx
        if await ctx.store.disabled_record(user) is not None:
            raise ApiRefusal(
                403, _E.USER_DISABLED, f"user {user!r} is disabled: no new devices"
            )
        code = crypto.generate_code()
        now = ctx.clock()
        ttl = ttl_seconds or ctx.config.limits.code_ttl_seconds
        expires = now + ttl * 1000
        try:
            await ctx.store.add_code(
                secrets.token_urlsafe(12),
                user,
                crypto.code_password(code),
                now,
                expires,
            )
        except NotFoundError as exc:
            raise ApiRefusal(
                404, _E.NOT_FOUND, f"no user {user!r}: add the user first"
            ) from exc
        # the code itself is a secret: the log says one was issued, never which
        await self.audit.record(
            actor, "code.issue", user, {"expires": iso(expires) or ""}
        )
        return proto.CodeIssued(user=user, code=code, expires_at=iso(expires) or "")

    async def disable_user(self, user: str, actor: str) -> proto.UserInfo:
        """Revoke every device of ``user`` and publish the signed record that takes the
        user out of every group (clients honour it)."""
        ctx = self.ctx
        row = await ctx.store.get_user(user)
        if row is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no user {user!r}")
        now = ctx.clock()
        record = ctx.authority.sign_user_disabled(
            proto.UserDisabled(org=self.org, user=user, disabled_at=now)
        )
        try:
            await ctx.store.disable_user(user, proto.encode(record), now)
        except ConflictError as exc:
            raise ApiRefusal(
                409, _E.CONFLICT, f"user {user!r} is disabled already"
            ) from exc
        revoked = 0
        for device in await ctx.store.list_devices(user):
            if device.revoked_at is None:
                await self._revoke(device, now, "user disabled")
                revoked += 1
        await self.audit.record(actor, "user.disable", user, {"devices": str(revoked)})
        return next(u for u in await self.users() if u.user == user)

    # --- devices -----------------------------------------------------------------------

    async def devices(self, user: str | None = None) -> list[proto.AdminDevice]:
        store = self.ctx.store
        fleet = await store.fleet_rows()
        changes = await store.policy_changes()
        rows = await store.list_devices(user)
        return [self._admin_device(d, fleet.get(d.device_id), changes) for d in rows]

    async def device(self, device_id: str) -> proto.AdminDevice:
        store = self.ctx.store
        row = await store.get_device(device_id)
        if row is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no device {device_id!r}")
        return self._admin_device(
            row, await store.fleet_row(device_id), await store.policy_changes()
        )

    def _admin_device(
        self, d: DeviceRow, fleet: FleetRow | None, changes: list[PolicyChangeRow]
    ) -> proto.AdminDevice:
        effective = _effective(changes, d.user)
        enforced = fleet.policy_version if fleet else None
        if fleet is not None and fleet.wiped_at is not None:
            compliance = "wiped"
        elif fleet is not None and fleet.wipe_ordered_at is not None:
            compliance = "wipe pending"
        elif d.revoked_at is not None:
            compliance = "revoked"
        elif effective is None:
            compliance = "compliant (no policy)"
        elif enforced is None or enforced < effective.version:
            compliance = f"behind: enforces v{enforced or 0} of v{effective.version}"
        elif effective.rules.min_client_version is not None and not (
            proto.version_at_least(d.client_version, effective.rules.min_client_version)
        ):
            compliance = f"client too old (needs {effective.rules.min_client_version})"
        else:
            compliance = "compliant"
        return proto.AdminDevice(
            device_id=d.device_id,
            user=d.user,
            name=d.name,
            created_at=iso(d.created_at) or "",
            last_seen=iso(d.last_seen),
            revoked_at=iso(d.revoked_at),
            client_version=d.client_version,
            policy_version=enforced,
            compliance=compliance,
            wipe_ordered_at=iso(fleet.wipe_ordered_at) if fleet else None,
            wiped_at=iso(fleet.wiped_at) if fleet else None,
        )

    async def revoke(self, device_id: str, actor: str) -> proto.AdminDevice:
        device = await self.ctx.store.get_device(device_id)
        if device is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no device {device_id!r}")
        if device.revoked_at is not None:
            raise ApiRefusal(409, _E.CONFLICT, f"device {device_id} is revoked already")
        await self._revoke(device, self.ctx.clock(), "")
        await self.audit.record(
            actor, "device.revoke", device_id, {"user": device.user}
        )
        return await self.device(device_id)

    async def _revoke(self, device: DeviceRow, now: int, reason: str) -> None:
        ctx = self.ctx
        revocation = ctx.authority.sign_revocation(
            proto.Revocation(
                org=self.org, device_id=device.device_id, revoked_at=now, reason=reason
            )
        )
        await ctx.store.revoke_device(device.device_id, proto.encode(revocation), now)
        await ctx.bus.publish("revoked", [device.device_id])

    async def order_wipe(self, device_id: str, actor: str) -> proto.AdminDevice:
        ctx = self.ctx
        device = await ctx.store.get_device(device_id)
        if device is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no device {device_id!r}")
        fleet = await ctx.store.fleet_row(device_id)
        if fleet is not None and fleet.wiped_at is not None:
            raise ApiRefusal(409, _E.CONFLICT, f"device {device_id} is wiped already")
        now = ctx.clock()
        order = ctx.authority.sign_wipe_order(
            proto.WipeOrder(org=self.org, device_id=device_id, ordered_at=now)
        )
        await ctx.store.order_wipe(device_id, proto.encode(order), now)
        if device.revoked_at is None:
            await self._revoke(device, now, "wipe ordered")
        else:
            await ctx.bus.publish("revoked", [device_id])  # a connected stream ends
        await self.audit.record(
            actor, "device.wipe_order", device_id, {"user": device.user}
        )
        return await self.device(device_id)

    async def wipe_confirmed(self, device_id: str, ordered_at: int) -> None:
        """The device verified its wipe order and is deleting everything."""
        ctx = self.ctx
        fleet = await ctx.store.fleet_row(device_id)
        if fleet is None or fleet.wipe_ordered_at != ordered_at:
            return  # not the order we gave: nothing to record
        await ctx.store.wipe_done(device_id, ctx.clock())
        await self.audit.record(f"device:{device_id}", "device.wiped", device_id)

    async def enforcing(self, device_id: str, version: int) -> None:
        await self.ctx.store.set_enforced(device_id, version, self.ctx.clock())

    async def wipe_order_for(self, device_id: str) -> proto.Signed | None:
        fleet = await self.ctx.store.fleet_row(device_id)
        if fleet is None or fleet.wipe_order is None or fleet.wiped_at is not None:
            return None
        return msgspec.msgpack.decode(fleet.wipe_order, type=proto.Signed)

    # --- policy ------------------------------------------------------------------------

    async def policy_view(self, user: str | None = None) -> proto.PolicyView:
        changes = await self.ctx.store.policy_changes()
        effective = _effective(changes, user)
        if effective is None:
            return proto.PolicyView(version=0, rules=proto.PolicyRules(), user=user)
        return proto.PolicyView(
            version=effective.version,
            rules=effective.rules,
            user=user,
            overrides=effective.overrides,
        )

    async def set_policy(self, change: proto.PolicySet, actor: str) -> proto.PolicyView:
        ctx = self.ctx
        if change.key not in proto.POLICY_KEYS:
            raise ApiRefusal(
                400,
                _E.BAD_REQUEST,
                f"{change.key!r} is not a policy setting; settings: "
                + ", ".join(proto.POLICY_KEYS),
            )
        if (
            change.key == "escrow"
            and change.value is True
            and await ctx.escrow.public_key() is None
        ):
            raise ApiRefusal(
                409,
                _E.CONFLICT,
                "escrow cannot be turned on before the custodians' ceremony: "
                "run `strongroom admin escrow init`",
            )
        if change.key == "escrow" and change.user is not None:
            raise ApiRefusal(
                400,
                _E.BAD_REQUEST,
                "escrow is set for the whole organisation only, so that everyone in a "
                "conversation sees the same: it cannot be a user's override",
            )
        if change.user is not None and await ctx.store.get_user(change.user) is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no user {change.user!r}")
        if change.clear and change.user is None:
            raise ApiRefusal(
                400, _E.BAD_REQUEST, "only a user's override can be cleared"
            )
        value = None if change.clear else change.value
        if not change.clear:
            try:
                msgspec.convert({change.key: value}, proto.PolicyRules)
            except msgspec.ValidationError as exc:
                raise ApiRefusal(400, _E.BAD_REQUEST, f"{change.key}: {exc}") from exc
        for _ in range(20):
            changes = await ctx.store.policy_changes()
            version = (changes[-1].version if changes else 0) + 1
            row = PolicyChangeRow(
                version=version,
                user=change.user,
                key=change.key,
                value=None if change.clear else json.dumps(value),
                at=ctx.clock(),
                actor=actor,
                cleared=change.clear,
            )
            try:
                await ctx.store.add_policy_change(row)
                break
            except ConflictError:
                continue
        else:
            raise ApiRefusal(503, _E.UNAVAILABLE, "policy is being changed; try again")
        scope = f"user:{change.user}" if change.user else "organisation"
        await self.audit.record(
            actor,
            "policy.clear" if change.clear else "policy.set",
            scope,
            {
                "key": change.key,
                "value": "" if change.clear else json.dumps(value),
                "version": str(version),
            },
        )
        devices = [
            d.device_id
            for d in await ctx.store.list_devices(change.user)
            if d.revoked_at is None
        ]
        if devices:
            await ctx.bus.publish("control", devices)
        return await self.policy_view(change.user)

    async def policy_history(self) -> list[proto.PolicyChange]:
        return [
            proto.PolicyChange(
                version=c.version,
                at=iso(c.at) or "",
                actor=c.actor,
                scope=f"user:{c.user}" if c.user else "organisation",
                key=c.key,
                value=None if c.value is None else json.loads(c.value),
                cleared=c.cleared,
            )
            for c in await self.ctx.store.policy_changes()
        ]

    async def signed_policy(self, user: str) -> tuple[int, proto.Signed] | None:
        """The policy in force for ``user``'s devices, signed; None if there is none."""
        effective = _effective(await self.ctx.store.policy_changes(), user)
        if effective is None:
            return None
        escrow_key = (
            await self.ctx.escrow.public_key() if effective.rules.escrow else None
        )
        policy = proto.Policy(
            org=self.org,
            user=user,
            version=effective.version,
            issued_at=effective.at,
            rules=effective.rules,
            escrow_key=escrow_key,
        )
        return effective.version, self.ctx.authority.sign_policy(policy)

    async def rules_for(self, user: str) -> proto.PolicyRules:
        effective = _effective(await self.ctx.store.policy_changes(), user)
        return proto.PolicyRules() if effective is None else effective.rules

    # --- audit -------------------------------------------------------------------------

    async def audit_entries(
        self, since_ms: int | None = None, limit: int = 10_000
    ) -> list[proto.AuditView]:
        views: list[proto.AuditView] = []
        after = -1
        while len(views) < limit:
            page = await self.ctx.store.audit_records(after, 1000)
            for record in page:
                try:
                    signed = msgspec.msgpack.decode(record.entry, type=proto.Signed)
                    entry = proto.decode_audit_entry(signed.body)
                except (msgspec.DecodeError, RemoteProtocolError):
                    continue  # damaged: `audit verify` names it
                if since_ms is not None and entry.at < since_ms:
                    continue
                views.append(
                    proto.AuditView(
                        seq=entry.seq,
                        at=iso(entry.at) or "",
                        actor=entry.actor,
                        action=entry.action,
                        subject=entry.subject,
                        details=dict(entry.details),
                        hash=record.hash.hex(),
                    )
                )
            if len(page) < 1000:
                break
            after = page[-1].seq
        return views[:limit]


def _effective(changes: list[PolicyChangeRow], user: str | None) -> _Effective | None:
    """Rule 3: the organisation's rules, then ``user``'s overrides; None if no change
    ever touched them."""
    org: dict[str, Any] = {}
    mine: dict[str, Any] = {}
    version = at = 0
    for c in changes:
        if c.user is None:
            org[c.key] = json.loads(c.value) if c.value is not None else None
        elif c.user == user:
            if c.cleared:
                mine.pop(c.key, None)
            else:
                mine[c.key] = json.loads(c.value) if c.value is not None else None
        else:
            continue
        version, at = c.version, c.at
    if version == 0:
        return None
    merged = {**org, **mine}
    rules = msgspec.convert(merged, proto.PolicyRules)
    return _Effective(version, at, rules, sorted(mine))
