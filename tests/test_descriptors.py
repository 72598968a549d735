"""The master's descriptors: the HTTP endpoints cannot use them all up, the limit is raised at
start, and a folder whose scan failed is scanned again soon."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import Cluster, Proc, free_port, logdispatch, wait_for

from dispatcher import defaults

# Low enough that a few hundred idle connections would take every descriptor of the master.
LOW_LIMIT = 256
FLOOD_PER_PORT = 150


def serve(cluster: Cluster, launcher: list[str], *extra: str) -> Proc:
    """`serve` as Cluster.serve starts it, behind ``launcher``."""
    args = ["dispatcher", str(cluster.root), "--address", cluster.address]
    args += ["--authkey-file", str(cluster.key_file), "--state", str(cluster.state)]
    args += ["--settle", "0.5", "--rescan", "300", *extra]
    master = Proc(args, cluster.tmp / "master.log", launcher=launcher)
    cluster.procs.append(master)
    cluster.master = master
    wait_for(lambda: "serving on" in master.output or master.popen.poll() is not None)
    assert master.popen.poll() is None, master.output
    return master


def status(cluster: Cluster) -> dict[str, Any]:
    where = ["--address", cluster.address, "--authkey-file", str(cluster.key_file)]
    shown = logdispatch("status", "--json", *where, timeout=30)
    assert shown.returncode == 0, shown.stderr
    document: dict[str, Any] = json.loads(shown.stdout)
    return document


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed (or reset) the connection; never blocks (on a socket
    without a timeout)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Flood:
    """Keeps up to ``per_port`` idle connections open to each port, opening new ones as the
    server closes them, like a client that reconnects; records how long each one lived."""

    OPENERS = 4  # threads per port: a server slow to accept still gets its backlog filled

    def __init__(self, ports: list[int], per_port: int) -> None:
        self._per_port = per_port
        self._lock = threading.Lock()
        self._open: dict[int, list[tuple[socket.socket, float]]] = {port: [] for port in ports}
        self.lifetimes: list[float] = []  # of the connections the server closed
        self.opened = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._reap, name="flood-reap", daemon=True)]
        for port in ports:
            for _ in range(self.OPENERS):
                self._threads.append(
                    threading.Thread(target=self._flood, args=(port,), name="flood", daemon=True)
                )

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for held in self._open.values():
            for sock, _ in held:
                sock.close()

    def _flood(self, port: int) -> None:
        while not self._stop.wait(0.02):  # a flood, not a busy loop
            with self._lock:
                if len(self._open[port]) >= self._per_port:
                    continue
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue  # its backlog is full
            sock.settimeout(None)  # for _closed(): a timeout would wait
            with self._lock:
                self._open[port].append((sock, time.monotonic()))
                self.opened += 1

    def _reap(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                now = time.monotonic()
                for port, held in self._open.items():
                    still = []
                    for sock, since in held:
                        if _closed(sock):
                            self.lifetimes.append(now - since)
                            sock.close()
                        else:
                            still.append((sock, since))
                    self._open[port] = still


@contextlib.contextmanager
def dripping(port: int) -> Iterator[list[float]]:
    """A connection that sends its request a byte every half second; yields [seconds it lasted]."""
    lasted: list[float] = []
    stop = threading.Event()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(None)  # for _closed(): a timeout would wait
    started = time.monotonic()

    def drip() -> None:
        with sock:
            for byte in b"GET /status.json HTTP/1.0\r\nX-Slow: " + b"a" * 1000:
                if stop.is_set():
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if stop.wait(0.5) or _closed(sock):
                    break
            lasted.append(time.monotonic() - started)

    thread = threading.Thread(target=drip, name="drip", daemon=True)
    thread.start()
    try:
        yield lasted
    finally:
        stop.set()
        thread.join(timeout=10)


def _get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split()[1])


def test_idle_http_connections_cannot_use_up_the_masters_descriptors(cluster: Cluster) -> None:
    """With its descriptors limited to 256, a master under a flood of idle connections to
    --http and --metrics still answers `status`, takes a new worker and counts a new file."""
    http_port, metrics_port = free_port(), free_port()
    master = serve(
        cluster,
        ["prlimit", f"--nofile={LOW_LIMIT}:{LOW_LIMIT}"],
        "--http",
        f"127.0.0.1:{http_port}",
        "--metrics",
        f"127.0.0.1:{metrics_port}",
    )
    wait_for(lambda: "report at" in master.output)
    # The dripping connection first: it is served, the flood then fills the rest.
    with dripping(http_port) as drip, Flood([http_port, metrics_port], FLOOD_PER_PORT) as flood:
        # As many as it takes, or as many as the master accepts.
        given_up = time.monotonic() + 20
        wait_for(lambda: flood.opened >= 2 * FLOOD_PER_PORT or time.monotonic() > given_up)
        assert status(cluster)["master"]["pid"] == master.popen.pid
        cluster.work()
        (cluster.root / "new").mkdir()  # scanned on its event: a descriptor for the folder
        (cluster.root / "new" / "a.log").write_bytes(b"ERROR during the flood\n" * 3)
        wait_for(lambda: cluster.files().get("new/a.log", {}).get("status") == "done", timeout=30)
        assert cluster.files()["new/a.log"]["error_lines"] == 3
        timeout = defaults.HTTP_REQUEST_TIMEOUT_SECONDS
        # Idle connections are closed after the timeout, the dripping one as well.
        wait_for(lambda: any(t >= timeout - 1 for t in flood.lifetimes), timeout=30)
        wait_for(lambda: drip, timeout=30)
        opened = flood.opened
    (lasted,) = drip
    assert timeout - 1 <= lasted <= timeout + 5  # closed mid-request, not at its end
    assert max(flood.lifetimes) <= timeout + 5
    # Over the cap, connections were refused at once, and said so in a few lines, not one each.
    assert opened > 2 * FLOOD_PER_PORT
    refusals = re.findall(r"refused (\d+) connections?", master.output)
    assert 1 <= len(refusals) <= 4, refusals
    assert "the report server refused" in master.output
    assert "the metrics server refused" in master.output
    # Both still serve.
    assert _get(http_port, "/status.json") == 200
    assert _get(metrics_port, "/metrics") == 200
    assert master.popen.poll() is None


def _limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open file limit")


def test_the_master_raises_its_soft_descriptor_limit(cluster: Cluster) -> None:
    master = serve(cluster, ["prlimit", "--nofile=256:4096"], "-vv")
    assert _limits(master.popen.pid) == (4096, 4096)
    assert "open file limit raised from 256 to 4096" in master.output


def test_a_folder_that_could_not_be_scanned_is_scanned_again_soon(
    cluster: Cluster, public_dir: Path
) -> None:
    """A master that runs unprivileged cannot list a folder of mode 000; once the folder is
    readable again, its file is counted within seconds, not at the next full rescan."""
    cluster.root = public_dir / "root"
    cluster.state = public_dir / "state"
    key_file = public_dir / "key"
    shutil.copy(cluster.key_file, key_file)
    for made in (cluster.root, cluster.state):
        made.mkdir()
    for owned in (cluster.state, key_file):
        os.chown(owned, 65534, 65534)
    cluster.root.chmod(0o755)
    hidden = cluster.root / "hidden"
    hidden.mkdir()
    (hidden / "a.log").write_bytes(b"ERROR behind a closed door\n")
    hidden.chmod(0)
    cluster.key_file = key_file
    master = serve(cluster, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    wait_for(lambda: f"cannot scan {hidden}: Permission denied" in master.output)
    hidden.chmod(0o755)
    cluster.work()
    # The full rescan is 300 s away.
    wait_for(lambda: status(cluster)["since_start"]["done"] == 1, timeout=30, interval=0.5)
    assert status(cluster)["since_start"]["error_lines"] == 1
    assert "scanned again the folders that could not be scanned" in master.output
