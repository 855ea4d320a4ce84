"""
Which stream tokens a revocation (L{wsgi_sse.disconnect}) refuses: those
made at or before it, for the identity, the channel, or the identity on the
channel it names.

A token skips the C{authorize} hook, so a browser reconnecting with the same
URL would otherwise open its stream again until the token expires.  Nothing
here knows about Twisted or threads; the hub calls it in the reactor thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ._tokens import MAX_TOKEN_TTL

__all__ = ["TOKEN_REVOCATIONS_KEPT", "RevokedTokens"]

TOKEN_REVOCATIONS_KEPT = 10_000
"""Revocations remembered for tokens at once (distinct identity/channel pairs)."""

_Key = tuple[str | None, str | None]


class RevokedTokens:
    """
    When each identity, channel, or identity on a channel was last revoked,
    for L{MAX_TOKEN_TTL} seconds (no token made before then is still valid).

    At most C{limit} are remembered: one more forgets the oldest and refuses,
    from then on, every token made at or before it (whoever it was for), until
    those have expired too.  A token that does not say when it was made (made
    by an older version) is taken for one made before every revocation
    remembered.
    """

    __slots__ = ("_floor", "_times", "limit")

    def __init__(self, limit: int = TOKEN_REVOCATIONS_KEPT) -> None:
        self.limit = limit
        # (identity, channel) -> when last revoked, the oldest first.
        self._times: OrderedDict[_Key, float] = OrderedDict()
        # Every token made at or before this time is refused (the limit was hit).
        self._floor: float | None = None

    def __len__(self) -> int:
        return len(self._times)

    def record(self, identity: str | None, channel: str | None, at: float, now: float) -> None:
        """Remember that C{identity} (on C{channel}), or C{channel}, was revoked at C{at}."""
        self._forget(now)
        times = self._times
        key = (identity, channel)
        previous = times.pop(key, None)
        times[key] = at if previous is None else max(at, previous)
        while len(times) > self.limit:
            _, oldest = times.popitem(last=False)
            if self._floor is None or oldest > self._floor:
                self._floor = oldest

    def knows(self, identity: str | None, channel: str | None, at: float) -> bool:
        """
        Whether C{identity} (on C{channel}), or C{channel}, is remembered
        as revoked at C{at} or later.
        """
        known = self._times.get((identity, channel))
        return known is not None and known >= at

    def refused(
        self, identity: str | None, channels: Iterable[str], issued: float | None, now: float
    ) -> bool:
        """
        Whether a token made at C{issued} (L{None}: unknown) for C{identity}
        opening C{channels} was made at or before a revocation matching it.
        """
        self._forget(now)
        times = self._times
        if not times and self._floor is None:
            return False
        floor = self._floor
        if floor is not None and (issued is None or issued <= floor):
            return True
        made = float("-inf") if issued is None else issued

        def revoked(key: _Key) -> bool:
            at = times.get(key)
            return at is not None and made <= at

        if identity is not None and revoked((identity, None)):
            return True
        return any(
            revoked((None, channel)) or (identity is not None and revoked((identity, channel)))
            for channel in channels
        )

    def _forget(self, now: float) -> None:
        """Forget what no valid token can be refused for any more."""
        horizon = now - MAX_TOKEN_TTL
        times = self._times
        while times:
            key, at = next(iter(times.items()))
            if at > horizon:
                break
            del times[key]
        if self._floor is not None and self._floor <= horizon:
            self._floor = None
