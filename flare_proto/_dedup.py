"""Which SENDs the server application already handled, so a resend is not handled twice.

A client resends every SEND still unacknowledged when its connection ended (DESIGN §5),
with its original ``message_id``. If the server had handled it and only the ACK was lost,
the resend would reach the application a second time. :class:`RecentSends` remembers the
SENDs handled lately; a server that finds a resend there ACKs it again instead of
delivering it (docs/decisions.md, "Delivery").

What identifies a SEND:

* its sender, user id and device id: message ids are unique per client process only
  (``"{unix_millis}-{counter}"``). A connection with neither cannot be told apart from
  another client that happens to use the same id, so it has no sender
  (:meth:`RecentSends.sender` returns ``None``) and keeps at-least-once delivery: a lost
  ACK then means a duplicate, never a SEND swallowed;
* its message id;
* its payload: a resend is the very same frame, while an application that reuses an id for
  a new message (ids may be chosen by the caller) must not have it taken for a resend.

These are kept as a 64-bit fingerprint (Python's ``hash``, keyed at random per process, so
a peer cannot aim at a collision): two different SENDs are taken for one with a
probability of about ``capacity / 2**64`` per SEND, ~4e-15 with the default.
"""

from __future__ import annotations

Sender = tuple[str, str]
"""``(user id, device id)``, either may be ``""`` but not both."""


class RecentSends:
    """The fingerprints of the last ``capacity`` SENDs handled, whatever their age; beyond
    that the oldest go first.

    A client resends a SEND only until its ``ack_timeout`` (10 s by default) ends, so the
    default (65,536, about 5 MiB) covers that window up to ~6,500 SENDs per second across
    the server. At a higher rate a resend may find its SEND forgotten and be handled
    again: a duplicate, not a loss. Every operation is O(1).
    """

    __slots__ = ("_next", "_order", "_seen", "capacity")

    def __init__(self, capacity: int = 65_536) -> None:
        if capacity < 1:
            raise ValueError("RecentSends needs capacity >= 1")
        self.capacity = capacity
        # A set for lookups and a ring of the same keys in the order they came, the
        # oldest at ``_next``: half the cost of an OrderedDict per SEND (and a plain dict
        # used as a queue slows down with every key taken from its front).
        self._seen: set[int] = set()
        self._order: list[int | None] = [None] * capacity
        self._next = 0

    @staticmethod
    def sender(user_id: str | None, device_id: str | None) -> Sender | None:
        """Who sends; ``None`` when anonymous (no user id and no device id): such a
        sender's SENDs are not remembered."""
        if not (user_id or device_id):
            return None
        return (user_id or "", device_id or "")

    @staticmethod
    def fingerprint(sender: Sender, message_id: str, payload: bytes) -> int:
        """The key of one SEND (module docstring)."""
        return hash((sender, message_id, payload))

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: object) -> bool:
        """Whether the SEND with fingerprint ``key`` was handled (and is still
        remembered)."""
        return key in self._seen

    def add(self, key: int) -> None:
        """Remember the SEND ``key`` as handled; the oldest beyond ``capacity`` is
        dropped."""
        seen = self._seen
        if key in seen:
            return
        at = self._next
        oldest = self._order[at]
        if oldest is not None:
            seen.discard(oldest)
        self._order[at] = key
        seen.add(key)
        self._next = at + 1 if at + 1 < self.capacity else 0
