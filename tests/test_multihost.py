"""Several worker hosts on one machine: network namespaces joined to the master by a bridge,
each with its own mount namespace in which the share sits at a path of its own.

Needs root and iproute2 (`ip netns`), as in CI. All addresses are on a private /24 that exists
only on the bridge and inside these namespaces; nothing is sent anywhere else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, Proc, free_port, wait_for, write_log

# A private /24 of its own per run: one left by a run that was killed cannot get in the way.
SUBNET = f"10.231.{secrets.randbelow(250) + 1}"
MASTER_IP = f"{SUBNET}.1"
SLOW_PATTERN = r"ERROR\s+\d+"

# In the host's own mount and UTS namespaces: name the host, mount the share (unless told not
# to), then become the worker.
ENTER_HOST = (
    'hostname "$1"; if [ "$2" != - ]; then mount --bind "$2" "$3" || exit 97; fi; '
    'shift 3; exec "$@"'
)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def _namespaces_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network and mount namespaces"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2 (ip) and util-linux (unshare)"
    probe = f"ldprobe{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"`ip netns` is unavailable here: {e}"
    return None


class Host:
    def __init__(self, name: str, index: int, tag: str) -> None:
        self.name = name
        self.netns = f"ld{tag}{index}"
        self.bridge_end = f"ldv{tag}{index}"  # on the bridge, in the master's namespace
        self.host_end = f"ldp{tag}{index}"
        self.ip = f"{SUBNET}.{10 + index}"

    def link(self, up: bool) -> None:
        _run("ip", "link", "set", self.bridge_end, "up" if up else "down")


class MultiHost:
    """A bridge for the master and one network namespace per worker host."""

    def __init__(self, cluster: Cluster, names: list[str]) -> None:
        self.cluster = cluster
        tag = secrets.token_hex(2)
        self.bridge = f"ldbr{tag}"
        self.hosts = {name: Host(name, i, tag) for i, name in enumerate(names)}
        self.workers: dict[str, Proc] = {}
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{MASTER_IP}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts.values():
            _run("ip", "netns", "add", host.netns)
            _run("ip", "link", "add", host.bridge_end, "type", "veth", "peer", host.host_end)
            _run("ip", "link", "set", host.bridge_end, "master", self.bridge, "up")
            _run("ip", "link", "set", host.host_end, "netns", host.netns)
            inside = ("ip", "netns", "exec", host.netns, "ip")
            _run(*inside, "addr", "add", f"{host.ip}/24", "dev", host.host_end)
            _run(*inside, "link", "set", host.host_end, "up")
            _run(*inside, "link", "set", "lo", "up")

    def serve(self, *extra: str) -> Proc:
        cluster = self.cluster
        cluster.port = free_port()
        cluster.address = f"{MASTER_IP}:{cluster.port}"
        return cluster.serve(*extra)

    def work(self, name: str, mount_point: str, mounted: bool = True) -> Proc:
        """Start `work --processes 2` on host ``name``, the share at its own ``mount_point``."""
        host = self.hosts[name]
        where = self.cluster.tmp / "hosts" / name / mount_point.lstrip("/")
        where.mkdir(parents=True)
        share = str(self.cluster.root) if mounted else "-"
        launcher = [
            "ip", "netns", "exec", host.netns,
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", ENTER_HOST, "enter-host", name, share, str(where),
        ]  # fmt: skip
        args = ["workers", "--address", self.cluster.address]
        args += ["--authkey-file", str(self.cluster.key_file), "--root", str(where)]
        args += ["--processes", "2"]
        proc = Proc(args, self.cluster.tmp / f"{name}.log", launcher=launcher)
        self.cluster.procs.append(proc)
        self.workers[name] = proc
        return proc

    def teardown(self) -> None:
        self.cluster.stop()
        for host in self.hosts.values():
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", host.bridge_end], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


@pytest.fixture
def hosts(cluster: Cluster) -> Iterator[MultiHost]:
    reason = _namespaces_usable()
    if reason:
        pytest.skip(reason)
    multi = MultiHost(cluster, ["host-a", "host-b", "host-c"])
    try:
        yield multi
    finally:
        multi.teardown()


def _logs(root: Path, count: int, megabytes: int) -> dict[str, tuple[int, int]]:
    """Write ``count`` logs of about ``megabytes`` MB; their (lines, error lines)."""
    expected = {}
    for i in range(count):
        name = f"web-{i % 4}/access-{i:02}.log"
        (root / name).parent.mkdir(exist_ok=True)
        expected[name] = write_log(root / name, megabytes, lines_per_error=100)
    return expected


def _files(multi: MultiHost) -> dict[str, dict[str, Any]]:
    return multi.cluster.files()


def _hosts_that_counted(multi: MultiHost) -> set[str]:
    return {e["worker"].split(":")[0] for e in _files(multi).values() if e["status"] == "done"}


def test_workers_on_every_host_count_the_share_at_their_own_mount(hosts: MultiHost) -> None:
    master = hosts.serve("--error-pattern", SLOW_PATTERN)
    assert f"serving on {MASTER_IP}:" in master.output
    for name, mount_point in (("host-a", "/mnt/logs-a"), ("host-b", "/srv/share")):
        worker = hosts.work(name, mount_point)
        wait_for(lambda w=worker: w.output.count("connected to the master") == 2)
    expected = _logs(hosts.cluster.root, 24, 6)
    wait_for(lambda: len(_files(hosts)) == 24, timeout=30)
    wait_for(lambda: all(e["status"] == "done" for e in _files(hosts).values()), timeout=60)
    files = _files(hosts)
    for name, counts in expected.items():
        assert (files[name]["lines"], files[name]["error_lines"]) == counts, name
    assert _hosts_that_counted(hosts) == {"host-a", "host-b"}


def test_a_host_cut_off_loses_its_leases_and_comes_back(hosts: MultiHost) -> None:
    cluster = hosts.cluster
    hosts.serve("--error-pattern", SLOW_PATTERN, "--lease", "3")
    a = hosts.work("host-a", "/mnt/logs-a")
    b = hosts.work("host-b", "/srv/share")
    expected = _logs(cluster.root, 12, 40)

    def host_a_counting() -> bool:
        return any(
            e["status"] == "leased" and e["worker"].startswith("host-a:")
            for e in _files(hosts).values()
        )

    wait_for(host_a_counting, timeout=30)
    hosts.hosts["host-a"].link(up=False)
    wait_for(lambda: len(_files(hosts)) == 12, timeout=30)
    wait_for(lambda: all(e["status"] == "done" for e in _files(hosts).values()), timeout=120)
    files = _files(hosts)
    for name, counts in expected.items():
        assert (files[name]["lines"], files[name]["error_lines"]) == counts, name
    assert any(e["attempts"] >= 2 for e in files.values()), "no lease of host-a expired"

    # Cut long enough for host-a to give up on its connections (the 30 s reply timeout)...
    wait_for(lambda: "lost the master" in a.output, timeout=60)
    hosts.hosts["host-a"].link(up=True)
    # ...so that when the link is back it must reconnect by itself.
    wait_for(lambda: a.output.count("connected to the master") >= 3, timeout=60)
    b.signal(signal.SIGTERM)  # from now on only host-a can count
    assert b.wait() == 0
    (cluster.root / "later").mkdir()
    later = {
        f"later/{name}": counts for name, counts in _logs(cluster.root / "later", 4, 2).items()
    }
    wait_for(lambda: all(_files(hosts).get(p, {}).get("status") == "done" for p in later), 60)
    files = _files(hosts)
    assert all(files[p]["worker"].startswith("host-a:") for p in later)
    assert all((files[p]["lines"], files[p]["error_lines"]) == c for p, c in later.items())


def test_a_host_without_the_mount_leaves_its_files_to_the_others(hosts: MultiHost) -> None:
    cluster = hosts.cluster
    hosts.serve("--max-attempts", "8")  # room for host-c's failures before host-a arrives
    broken = hosts.work("host-c", "/mnt/missing", mounted=False)
    wait_for(lambda: broken.output.count("connected to the master") >= 2)  # both processes
    expected = _logs(cluster.root, 16, 1)
    wait_for(lambda: "file not found" in broken.output, timeout=30)
    hosts.work("host-a", "/mnt/logs-a")
    wait_for(lambda: len(_files(hosts)) == 16, timeout=30)
    wait_for(lambda: all(e["status"] == "done" for e in _files(hosts).values()), timeout=60)
    files = _files(hosts)
    for name, counts in expected.items():
        assert (files[name]["lines"], files[name]["error_lines"]) == counts, name
    assert _hosts_that_counted(hosts) == {"host-a"}
    broken.signal(signal.SIGTERM)
    assert broken.wait() == 0
