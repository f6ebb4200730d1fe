"""Which SENDs the server application already handled, so a resend is not handled twice.

A client resends every SEND still unacknowledged when its connection ended (DESIGN §5),
with its original ``message_id``. If the server had handled it and only the ACK was lost,
the resend would reach the application a second time. :class:`RecentSends` remembers the
SENDs handled lately; a server that finds a resend in it ACKs it again instead of
delivering it (docs/decisions.md, "Delivery").

Message ids are unique per client process only (``"{unix_millis}-{counter}"``), so a key
also names the sender: its user id and device id. A connection with neither cannot be told
apart from another client that happens to use the same id, so it gets no key
(:meth:`RecentSends.key` returns ``None``) and keeps at-least-once delivery: a lost ACK
then means a duplicate, never a SEND swallowed. A key also holds the payload's hash: a
resend is the same frame, while an application that reuses an id for a new message (ids
may be chosen by the caller) must not have that message taken for a resend and dropped.
"""

from __future__ import annotations

from collections import OrderedDict

SendKey = tuple[str, str, str, int]
"""``(user id, device id, message id, hash of the payload)``; a tuple, so no choice of ids
makes two collide."""


class RecentSends:
    """A bounded, time-limited set of handled SENDs.

    Keys older than ``ttl`` seconds count as absent; beyond ``capacity`` keys the oldest
    go first. Time enters only as ``now`` (monotonic, never going back). A client resends
    a SEND only until its ``ack_timeout`` (10 s by default, :class:`~flare_proto.ClientConfig`)
    ends; the default ``ttl`` (120 s) is well above that, and the default ``capacity``
    (65,536 keys, about 20 MiB with ids of the usual length) keeps those 10 s covered up
    to ~6,500 SENDs per second across the hub. At a higher rate the window shrinks to
    ``capacity / rate`` seconds: an older resend is handled again (a duplicate, not a loss).
    """

    __slots__ = ("_seen", "capacity", "ttl")

    def __init__(self, capacity: int = 65_536, ttl: float = 120.0) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("RecentSends needs capacity >= 1 and ttl > 0")
        self.capacity = capacity
        self.ttl = ttl
        # Oldest first. An OrderedDict, not a dict: dropping keys from the front of a dict
        # leaves holes that every later scan for its first key walks over (O(n)).
        self._seen: OrderedDict[SendKey, float] = OrderedDict()

    @staticmethod
    def key(
        user_id: str | None, device_id: str | None, message_id: str, payload: bytes
    ) -> SendKey | None:
        """The key of one sender's SEND, or ``None`` when the sender is anonymous (no user
        id and no device id) or the SEND has no id."""
        if not message_id or not (user_id or device_id):
            return None
        return (user_id or "", device_id or "", message_id, hash(payload))

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` was added (it may have expired: use :meth:`seen`)."""
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: SendKey, now: float) -> bool:
        """Whether ``key`` was added less than ``ttl`` seconds before ``now``."""
        added = self._seen.get(key)
        return added is not None and now - added < self.ttl

    def add(self, key: SendKey, now: float) -> None:
        """Remember ``key`` as handled at ``now``, dropping expired and surplus keys."""
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)  # re-added: young again
        seen[key] = now
        horizon = now - self.ttl
        capacity = self.capacity
        while len(seen) > capacity or next(iter(seen.values())) <= horizon:
            seen.popitem(last=False)
