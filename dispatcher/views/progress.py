"""``run --once``'s progress on stderr: a bar on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from rich.filesize import decimal

from dispatcher.views.activity import Activity

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# Without a terminal (a log file, CI), one line this often: enough to see it move, little noise.
LINE_SECONDS = 5.0
# A bar redraws itself; feeding it more often than this is wasted work for the master loop.
UPDATE_SECONDS = 0.1


class RunProgress:
    """Fed by the master loop (``update()`` each step), reads the master's ``Activity``."""

    def __init__(self, activity: Activity, out: TextIO = sys.stderr) -> None:
        self._activity = activity
        self._out = out
        self._started = time.monotonic()
        self._last = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if out.isatty():
            # Loaded for a terminal only: without one, start-up does without rich's progress.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=out),
            )
            self._task = self._bar.add_task("scanning", total=None, files="")
            self._bar.start()

    def update(self, scanning: bool) -> None:
        now = time.monotonic()
        interval = UPDATE_SECONDS if self._bar is not None else LINE_SECONDS
        if now - self._last < interval:
            return
        self._last = now
        queued, queued_bytes, finished, finished_bytes = self._activity.progress()
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                description="scanning" if scanning else "counting",
                total=None if scanning else queued_bytes,
                completed=finished_bytes,
                files=f"{finished:,}/{queued:,} files",
            )
        elif now - self._started >= LINE_SECONDS:
            rate = finished / (now - self._started)
            found = "found so far" if scanning else "found"
            print(
                f"logdispatch run: {finished:,} of {queued:,} files {found} counted "
                f"({decimal(finished_bytes)} of {decimal(queued_bytes)}), {rate:,.0f} files/s",
                file=self._out,
                flush=True,
            )

    def close(self) -> None:
        """The last state: the full bar, or one closing line."""
        self._last = 0.0
        if self._bar is not None:
            self.update(scanning=False)
            self._bar.stop()
            return
        _, _, finished, finished_bytes = self._activity.progress()
        seconds = time.monotonic() - self._started
        files = f"{finished:,} file{'' if finished == 1 else 's'}"
        print(
            f"logdispatch run: {files} ({decimal(finished_bytes)}) in {seconds:.1f} s",
            file=self._out,
            flush=True,
        )
