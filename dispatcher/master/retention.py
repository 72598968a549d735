"""``serve --keep DURATION``: the master prunes its own ledger (dispatcher.ledger.prune) of what
was finished longer ago than that, a step per loop, as the ledger's only writer."""

from __future__ import annotations

import logging
from collections.abc import Callable

from dispatcher import defaults
from dispatcher.ledger.prune import Pruning
from dispatcher.ledger.writer import Ledger

log = logging.getLogger(f"logdispatch.{__name__}")


class Retention:
    """Starts a prune at start-up and then once an interval (a tenth of ``keep``, between
    PRUNE_EVERY_MIN_SECONDS and PRUNE_EVERY_MAX_SECONDS), and takes it a step further at each
    ``step()``: no step holds the loop for long."""

    def __init__(
        self, ledger: Ledger, keep: float, clock: Callable[[], float], wall: Callable[[], float]
    ) -> None:
        self._ledger = ledger
        self._keep = keep
        self._clock = clock
        self._wall = wall
        self._every = min(
            max(keep / 10, defaults.PRUNE_EVERY_MIN_SECONDS), defaults.PRUNE_EVERY_MAX_SECONDS
        )
        self._next = clock()
        self._pruning: Pruning | None = None

    def step(self) -> None:
        if self._pruning is None:
            if self._clock() < self._next:
                return
            self._pruning = self._ledger.pruning(self._wall() - self._keep)
        if self._ledger.prune_step(self._pruning):
            return
        done = self._pruning.done
        if done.versions or done.samples:
            log.info("pruned %s finished more than %g s ago", done, self._keep)
        self._pruning = None
        self._next = self._clock() + self._every
