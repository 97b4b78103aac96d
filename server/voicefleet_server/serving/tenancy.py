"""Who owns what: with API keys on, an uploaded voice and a job belong to the key that
made them.

A caller is a `Principal`: the id of its key (a SHA-256 digest of the key, truncated;
never the key itself, which is not stored anywhere), and whether it is the admin key.
Stores stamp new voices and jobs with `principal.owner` and ask `principal.sees(owner)`
before handing anything out; what a caller may not see answers exactly as if it did not
exist (404, or "unknown voice"), so ids of other keys' things cannot be probed.
With keys off there is one tenant: everything is everyone's, as before.
Built-in voices belong to nobody and are shared by all keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Domain separation: this digest is an owner id, not a key check (api/auth.py has its own).
_PREFIX = b"voicefleet-owner\n"


def key_id(key: str) -> str:
    """The owner id of an API key: 32 hex digits of a SHA-256 (128 bits, no collisions)."""
    return hashlib.sha256(_PREFIX + key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Principal:
    # None when API keys are off (everyone is the same tenant).
    key_id: str | None = None
    admin: bool = False

    @property
    def owner(self) -> str:
        """The owner stamped on what this caller creates ("" with keys off)."""
        return self.key_id or ""

    def sees(self, owner: str) -> bool:
        """Whether this caller may see (use, list, delete) something owned by `owner`.

        With keys on, things made while keys were off (owner "") are the admin's alone:
        turning keys on must not hand them to every key."""
        return self.admin or self.key_id is None or owner == self.key_id


# Keys off: the one tenant.
ANYONE = Principal()
# The server itself (resuming a job, warming up): sees everything, owns nothing.
SYSTEM = Principal(admin=True)
