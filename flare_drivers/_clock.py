"""The drivers' clock and id source: the one place where real time enters flare.

The core takes ``now`` from :func:`now` (``time.monotonic``), not from the event loop's
clock: trio's clock has a random offset, and both backends must produce the same ids and
deadlines. Ids are Unix-millisecond based (reference §11.3), so :func:`process_ids` pins
the wall-clock offset once per process, and starts its message counter at a random
48-bit value, so that two client processes started apart do not share ids (a server
de-duplicates resent SENDs by user, device, id and payload: flare_proto.RecentSends). A
process forked after its first id continues the same counter as its parent.
"""

from __future__ import annotations

import secrets
import time

from flare_proto import SequentialIds

now = time.monotonic

_IDS: SequentialIds | None = None


def process_ids() -> SequentialIds:
    """The id source shared by every connection of this process (ids stay unique)."""
    global _IDS
    if _IDS is None:
        _IDS = SequentialIds(wall_offset=time.time() - time.monotonic(), first=secrets.randbits(48))
    return _IDS
