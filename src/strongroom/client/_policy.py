"""The organisation's policy in force on this device: the hook for signed policies.

DESIGN.md's "IT's orders are IT's": policies will be signed by the authority, and a
device will reject unsigned, stale or replayed ones.  No policy system exists yet, so
``policy_in_force`` always answers ``None`` and the chat app shows "no policy".  When
policies arrive, this is the one function to fill in (verify the newest stored policy
under the pinned authority key and return what it says); every caller already shows
what it returns.
"""

from __future__ import annotations

import msgspec

from ._store import LocalStore

__all__ = ["PolicyInForce", "policy_in_force"]


class PolicyInForce(msgspec.Struct, frozen=True):
    """A verified policy, as a person should see it: its version and its rules in words."""

    version: int
    issued_at: int
    rules: list[str]


def policy_in_force(store: LocalStore) -> PolicyInForce | None:
    """The policy this device enforces, or ``None`` when the organisation has none.

    Hook: there is no policy system yet (see the module docstring).
    """
    del store  # the verified policy will be read from here
    return None
