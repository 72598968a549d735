"""The master's settings, checked once when they are made."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher import defaults
from dispatcher.versions import KEEP, OnDone
from workers.common import DEFAULT_ADDRESS, TLSFiles
from workers.errors import ConfigError
from workers.matching import DEFAULT_ERROR_PATTERN, Counters, check_counters


@dataclass(frozen=True)
class MasterConfig:
    root: Path
    authkey: bytes
    address: tuple[str, int] = DEFAULT_ADDRESS
    state_dir: Path = Path(defaults.STATE_DIR)
    poll: float | None = None
    settle: float = defaults.SETTLE_SECONDS
    follow: float | None = None  # count a growing log this often, up to its last whole line
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    error_pattern: bytes = DEFAULT_ERROR_PATTERN
    counters: Counters = ()  # named counters, (name, pattern) pairs, counted beside error lines
    recount: str | None = None  # at start: "all" counted with other rules, or "missing" counters
    lease: float = defaults.LEASE_SECONDS
    max_lease_age: float = defaults.MAX_LEASE_AGE_SECONDS
    max_attempts: int = defaults.MAX_ATTEMPTS
    rescan: float = defaults.RESCAN_SECONDS
    events: bool = True  # False: no watcher at all, only the rescans find files
    once: bool = False  # count what is there now, then finish: no watching, no rescans
    commit_interval: float = defaults.COMMIT_SECONDS
    on_done: OnDone = KEEP
    keep: float | None = None  # prune what was finished longer ago than this (seconds)
    tls: TLSFiles | None = None  # the server's certificate, key and clients' CA

    def __post_init__(self) -> None:
        if not os.path.isdir(self.root):  # False, not an OSError, for a root it cannot reach
            raise ConfigError(f"root {self.root} is not a directory")
        try:
            re.compile(self.error_pattern)
        except re.error as e:
            raise ConfigError(f"--error-pattern is not a valid regex: {e}") from None
        check_counters(self.counters)
        if self.rescan <= 0:
            raise ConfigError("--rescan must be positive")
        if self.poll is not None and self.poll <= 0:
            raise ConfigError("--poll must be positive")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.lease <= 0 or self.settle < 0:
            raise ConfigError("--lease must be positive and --settle not negative")
        if self.follow is not None and self.follow <= 0:
            raise ConfigError("--follow must be positive")
        if self.max_lease_age < self.lease:
            raise ConfigError("--max-lease-age must be at least --lease")
