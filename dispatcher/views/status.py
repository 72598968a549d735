"""``logdispatch status``: the running master's document of its present, and its display.

The master builds the document (``document``) on a manager-server thread when asked; the
command fetches it over the same authenticated connection workers use and shows it once, as
JSON, or refreshed in place.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import AuthenticationError
from multiprocessing.managers import RemoteError
from typing import TYPE_CHECKING, Any, TextIO

from dispatcher.transport.taskqueue import QueueState
from dispatcher.views.activity import RATE_WINDOW_SECONDS, ActivitySnapshot
from workers.common import TLSFiles, display_path, error_text, format_address, host_of
from workers.errors import MasterUnreachable
from workers.protocol import DispatchManager, forget_connection, tls_error_text

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

# The document lists at most this many leases (oldest first); "files.in_flight" counts them all.
IN_FLIGHT_LISTED = 100
# The table shows this many of them.
IN_FLIGHT_SHOWN = 10


@dataclass(frozen=True, slots=True)
class MasterInfo:
    """What does not change while a master runs."""

    root: bytes
    address: tuple[str, int]
    host: str
    pid: int
    watch: str  # "events", "polling every N s", "rescans only", "once"
    lease: float  # a worker silent this long is lost


@dataclass(frozen=True, slots=True)
class RootWatch:
    """The root now: "ok", "gone" (deleted; its files wait until it is back) or "unwatched"
    (there, but its watch could not be set again); and how often its watch was set again on a
    new folder (the root deleted and made again, or replaced)."""

    state: str = "ok"
    rewatched: int = 0


def status_document(
    info: MasterInfo,
    queue: QueueState,
    activity: ActivitySnapshot,
    settling: int,
    now: float,
    root: RootWatch = RootWatch(),
) -> dict[str, Any]:
    """The status document; its keys are documented in docs/commands.md and only ever added to.

    ``now`` is the activity clock's present (monotonic), which all its times are on.
    """
    leases_by_worker: dict[str, list[Any]] = {}
    for lease in queue.leases:
        leases_by_worker.setdefault(lease.worker, []).append(lease)
    workers = []
    for worker in sorted(activity.workers, key=lambda w: w.id):
        held = leases_by_worker.get(worker.id, [])
        if worker.gone_at is not None:
            state = "gone"
        elif now - worker.last_seen > info.lease:
            state = "lost"
        else:
            state = "counting" if held else "idle"
        current = held[0] if held else None
        workers.append(
            {
                "id": worker.id,
                "host": host_of(worker.id),
                "state": state,
                "last_seen_seconds": round(now - worker.last_seen, 3),
                "files": worker.files,
                "bytes": worker.bytes,
                "current": None if current is None else display_path(current.task.path),
                # Batches are leased at once and their results sent every second or so: the
                # current file has been counted since its lease or the worker's last result.
                "current_seconds": None
                if current is None
                else round(now - max(current.taken_at, worker.last_result), 3),
            }
        )
    finished = activity.finished
    return {
        "master": {
            "root": display_path(info.root),
            "address": format_address(info.address),
            "host": info.host,
            "pid": info.pid,
            "watch": info.watch,
            "started_at": round(activity.started, 3),
            "uptime_seconds": round(activity.uptime, 3),
            "root_state": root.state,
            "root_rewatched": root.rewatched,
        },
        "files": {
            "settling": settling,
            "queued": queue.ready,
            "retrying": queue.delayed,
            "in_flight": len(queue.leases),
        },
        "since_start": {
            "queued": activity.queued_files,
            "done": finished["done"],
            "failed": finished["failed"],
            "vanished": finished["vanished"],
            "superseded": finished["superseded"],
            "bytes": activity.finished_bytes,
            "lines": activity.lines,
            "error_lines": activity.error_lines,
            "counts": activity.counts,
        },
        "rate": {
            "window_seconds": round(min(activity.window, RATE_WINDOW_SECONDS), 3),
            "files_per_second": round(activity.window_files / activity.window, 3),
            "bytes_per_second": round(activity.window_bytes / activity.window, 1),
        },
        "workers": workers,
        "in_flight": [
            {
                "path": display_path(lease.task.path),
                "worker": lease.worker,
                "attempt": lease.task.attempt,
                "bytes": lease.task.size,
                "seconds": round(now - lease.taken_at, 3),
            }
            for lease in queue.leases[:IN_FLIGHT_LISTED]
        ],
        "recent_failures": [
            {"at": round(f.at, 3), "path": display_path(f.path), "error": f.error}
            for f in reversed(activity.failures)
        ],
    }


def fetch(address: tuple[str, int], authkey: bytes, tls: TLSFiles | None = None) -> dict[str, Any]:
    """Ask the master at ``address`` for its status document."""
    where = format_address(address)
    manager = DispatchManager(address, authkey, tls)
    try:
        manager.connect()
        service = manager.get_status()  # type: ignore[attr-defined]
        result: dict[str, Any] = service.status()
    except AuthenticationError:
        raise MasterUnreachable(f"the master at {where} refused this authkey") from None
    except (OSError, EOFError) as e:
        tls_text = tls_error_text(e)
        if tls_text is not None:
            raise MasterUnreachable(f"TLS with the master at {where} failed: {tls_text}") from None
        raise MasterUnreachable(f"cannot reach the master at {where}: {error_text(e)}") from None
    except RemoteError as e:  # the master raised while building it: its traceback is the text
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
        raise MasterUnreachable(f"the master at {where} could not report: {reason}") from None
    finally:
        # The proxies cache their connection per address and thread: the next fetch (under
        # --watch) must not reuse one a restarted master has closed.
        forget_connection(address)
    return result


# --- display ---------------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> RenderableType:
    """The document as rich renderables: a header, the workers, the oldest leases, failures."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    master, files, since, rate = doc["master"], doc["files"], doc["since_start"], doc["rate"]
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row(
        "master",
        Text(
            f"{master['address']}  pid {master['pid']} on {master['host']}  "
            f"up {_duration(master['uptime_seconds'])}"
        ),
    )
    header.add_row("root", _root_text(master))
    header.add_row(
        "files now",
        Text(
            f"{files['settling']:,} settling, {files['queued']:,} queued, "
            f"{files['retrying']:,} retrying, {files['in_flight']:,} in flight"
        ),
    )
    header.add_row(
        "since start",
        Text(
            f"{since['done']:,} done, {since['failed']:,} failed, {since['vanished']:,} vanished:"
            f" {_size(since['bytes'])}, {since['lines']:,} lines, "
            f"{since['error_lines']:,} error lines"
        ),
    )
    # .get(): a master from before named counters answers without them.
    counts = since.get("counts") or {}
    if counts:
        header.add_row(
            "counters", Text("  ".join(f"{name} {lines:,}" for name, lines in counts.items()))
        )
    header.add_row(
        "last minute",
        Text(
            f"{rate['files_per_second']:,.1f} files/s, {_size(rate['bytes_per_second'])}/s"
            + (
                ""
                if rate["window_seconds"] >= RATE_WINDOW_SECONDS
                else f" (over {rate['window_seconds']:.0f} s)"
            )
        ),
    )
    parts: list[RenderableType] = [header]

    workers = Table(title=f"workers ({len(doc['workers'])})", title_justify="left")
    for name, justify in (
        ("id", "left"),
        ("state", "left"),
        ("last seen", "right"),
        ("files", "right"),
        ("counted", "right"),
        ("current file", "left"),
        ("for", "right"),
    ):
        workers.add_column(name, justify=justify)  # type: ignore[arg-type]
    for w in doc["workers"]:
        workers.add_row(
            Text(w["id"]),
            Text(w["state"], style=_STATE_STYLES.get(w["state"], "")),
            f"{w['last_seen_seconds']:.1f} s ago",
            f"{w['files']:,}",
            _size(w["bytes"]),
            Text(w["current"] or "-", overflow="fold"),
            "-" if w["current_seconds"] is None else f"{w['current_seconds']:.1f} s",
        )
    if not doc["workers"]:
        workers.add_row(Text("none connected", style="yellow"))
    parts.append(workers)

    if doc["in_flight"]:
        shown = doc["in_flight"][:IN_FLIGHT_SHOWN]
        title = f"in flight, oldest first ({len(shown)} of {files['in_flight']:,})"
        leases = Table(title=title, title_justify="left")
        leases.add_column("path", overflow="fold")
        leases.add_column("worker")
        leases.add_column("attempt", justify="right")
        leases.add_column("size", justify="right")
        leases.add_column("leased", justify="right")
        for lease in shown:
            leases.add_row(
                Text(lease["path"]),
                Text(lease["worker"]),
                str(lease["attempt"]),
                _size(lease["bytes"]),
                f"{lease['seconds']:.1f} s",
            )
        parts.append(leases)

    if doc["recent_failures"]:
        failures = Table(title="recent failures", title_justify="left")
        failures.add_column("when")
        failures.add_column("path", overflow="fold")
        failures.add_column("error", overflow="fold")
        for failure in doc["recent_failures"]:
            failures.add_row(
                datetime.fromtimestamp(failure["at"]).strftime("%H:%M:%S"),
                Text(failure["path"]),
                Text(failure["error"]),
            )
        parts.append(failures)
    return Group(*parts)


_STATE_STYLES = {"counting": "green", "idle": "", "lost": "bold red", "gone": "dim"}

_ROOT_STATES = {
    "gone": "GONE: its new files wait until it is back",
    "unwatched": "NOT WATCHED: it came back but cannot be watched; rescans only",
}


def _root_text(master: dict[str, Any]) -> Text:
    from rich.text import Text

    text = Text(f"{master['root']}  ({master['watch']})")
    # .get(): a master from before these keys answers without them.
    state = master.get("root_state", "ok")
    if state != "ok":
        text.append(f"  {_ROOT_STATES.get(state, state)}", style="bold red")
    rewatched = master.get("root_rewatched", 0)
    if rewatched:
        text.append(
            f"  watched again {rewatched} time{'s' if rewatched != 1 else ''} "
            "after being deleted or replaced",
            style="yellow",
        )
    return text


def show(doc: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console

    Console(file=out, highlight=False).print(render(doc))


def watch(
    address: tuple[str, int],
    authkey: bytes,
    interval: float,
    out: TextIO,
    tls: TLSFiles | None = None,
) -> None:
    """Refresh the view in place every ``interval`` seconds until interrupted."""
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out, highlight=False)
    with Live(console=console, auto_refresh=False) as live:
        for view in _views(address, authkey, interval, tls):
            live.update(view, refresh=True)
            time.sleep(interval)


def _views(
    address: tuple[str, int], authkey: bytes, interval: float, tls: TLSFiles | None
) -> Iterator[Any]:
    from rich.console import Group
    from rich.text import Text

    while True:
        stamp = datetime.now().strftime("%H:%M:%S")
        try:
            doc = fetch(address, authkey, tls)
        except MasterUnreachable as e:
            yield Text(f"{stamp}  {e}; trying again every {interval:g} s", style="yellow")
            continue
        yield Group(
            Text(f"{stamp}  every {interval:g} s, Ctrl-C to quit", style="dim"), render(doc)
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _size(size: float) -> str:
    from rich.filesize import decimal

    return decimal(int(size))
