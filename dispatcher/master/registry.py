"""What the master knows of each file version while it runs: the latest version of every path,
the counted ones noticed gone, the paths settling, and the versions not yet final with their
attempts and the hosts to avoid.

The master loop is its only writer. The task queue reads ``get`` from the manager server's
threads: each open version is an immutable record replaced whole, and a dict read is atomic, so
a reader sees either the record before a change or the one after.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from dispatcher.versions import CountedVersion, OpenVersion, Version


class Ready(Enum):
    """Why a version is to be counted now."""

    SETTLED = "settled"  # it held still for the settle time, or was old enough already
    GROWING = "growing"  # it kept changing for the follow time: counted up to its last line


@dataclass(frozen=True, slots=True)
class _Settling:
    size: int
    mtime_ns: int
    since: float  # monotonic time it was first seen with this size and mtime
    changing_since: float  # monotonic time it was first seen changing, not counted since


class Registry:
    def __init__(self, known: dict[bytes, tuple[int, int]], gone: set[bytes] | None = None) -> None:
        # Size and mtime of the latest version of every path in the root (from the ledger at
        # start): a file seen with them again is not new.
        self._known = known
        # Paths of counted versions noticed gone (kept in _known: a file back as it was, say
        # after a share was remounted, is the same version and is not counted again).
        self._gone = set() if gone is None else gone
        self._settling: dict[bytes, _Settling] = {}
        self._open: dict[int, OpenVersion] = {}
        self._open_by_path: dict[bytes, int] = {}

    # --- settling --------------------------------------------------------------------------

    def settled(
        self,
        path: bytes,
        size: int,
        mtime_ns: int,
        now: float,
        settle: float,
        old_enough: bool,
        follow: float | None = None,
    ) -> Ready | None:
        """Whether ``path`` with this size and mtime is a new version to count now, and why.

        It is when it is not the latest version known and it held still for ``settle``
        seconds, or is ``old_enough`` already, or (with ``follow``) has kept changing for
        ``follow`` seconds; otherwise it is remembered as settling from now (or from when it
        was first seen so, if it was).
        """
        if self._known.get(path) == (size, mtime_ns):
            self._settling.pop(path, None)
            return None
        previous = self._settling.get(path)
        unchanged = previous is not None and (previous.size, previous.mtime_ns) == (size, mtime_ns)
        if old_enough or (unchanged and previous is not None and now - previous.since >= settle):
            self._settling.pop(path, None)
            return Ready.SETTLED
        changing_since = now if previous is None else previous.changing_since
        if follow is not None and now - changing_since >= follow:
            self._settling.pop(path, None)
            return Ready.GROWING
        if not unchanged:
            self._settling[path] = _Settling(size, mtime_ns, now, changing_since)
        return None

    def due(self, now: float, settle: float, follow: float | None = None) -> list[bytes]:
        """The settling paths to look at again: unchanged for ``settle`` seconds, if still so,
        or changing for ``follow`` seconds."""
        return [
            p
            for p, s in self._settling.items()
            if now - s.since >= settle or (follow is not None and now - s.changing_since >= follow)
        ]

    def unsettle(self, path: bytes) -> None:
        """``path`` is gone, or no longer a file to count."""
        self._settling.pop(path, None)

    @property
    def settling(self) -> int:
        return len(self._settling)

    # --- open versions ---------------------------------------------------------------------

    def add(self, record: OpenVersion) -> None:
        """A version to count; it is now the latest known version of its path."""
        version = record.version
        self._open[version.id] = record
        self._open_by_path[version.path] = version.id
        self._known[version.path] = (version.size, version.mtime_ns)

    def get(self, version_id: int) -> OpenVersion | None:
        """The open version with this id; None once it is final (or never was)."""
        return self._open.get(version_id)

    def open_on(self, path: bytes) -> int | None:
        """The id of the open version of ``path``, if one is open."""
        return self._open_by_path.get(path)

    def offer(self, version_id: int, bases: tuple[CountedVersion, ...]) -> None:
        """The counted versions the open version's content may extend (before it is queued)."""
        self._open[version_id] = dataclasses.replace(self._open[version_id], bases=bases)

    def failed(self, version_id: int, attempt: int, host: str) -> OpenVersion:
        """Record that ``attempt`` failed on ``host``; returns the version as it now stands."""
        record = self._open[version_id].failed(attempt, host)
        self._open[version_id] = record
        return record

    def close(self, version_id: int) -> Version:
        """The version is final: counted, failed for good, vanished or superseded."""
        version = self._open.pop(version_id).version
        if self._open_by_path.get(version.path) == version_id:
            del self._open_by_path[version.path]
        return version

    # --- counted versions that leave the root ------------------------------------------------

    def missing(self, seen: set[bytes]) -> list[bytes]:
        """The paths known as final and not yet gone that ``seen`` (a whole root's scan) lacks."""
        return [p for p in self._known if p not in seen and self.went(p)]

    def went(self, path: bytes) -> bool:
        """Whether ``path`` should now be marked gone: a final version known and not yet gone."""
        return path in self._known and path not in self._gone and path not in self._open_by_path

    def mark_gone(self, path: bytes) -> None:
        self._gone.add(path)

    def back(self, path: bytes) -> bool:
        """``path`` is there again; whether it had been marked gone."""
        if path in self._gone:
            self._gone.discard(path)
            return True
        return False

    def forget(self, path: bytes) -> None:
        """The latest version of ``path`` is no longer there: whatever is found there is new."""
        self._known.pop(path, None)

    def __contains__(self, version_id: int) -> bool:
        return version_id in self._open

    def __len__(self) -> int:
        """How many versions are open."""
        return len(self._open)
