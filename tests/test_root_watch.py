"""The watched root deleted and made again, or replaced: the master watches the new folder."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from conftest import Cluster, logdispatch, wait_for


def status(cluster: Cluster, *view: str) -> Any:
    shown = logdispatch(
        "status", "--address", cluster.address, "--authkey-file", str(cluster.key_file), *view
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout) if view == ("--json",) else shown.stdout


def root_of(cluster: Cluster) -> dict[str, Any]:
    master: dict[str, Any] = status(cluster, "--json")["master"]
    return master


def done(cluster: Cluster, path: str) -> bool:
    return cluster.files().get(path, {}).get("status") == "done"


@pytest.mark.parametrize("watch", [[], ["--poll", "0.5"]], ids=["events", "polling"])
def test_a_root_deleted_and_made_again_is_watched_again(cluster: Cluster, watch: list[str]) -> None:
    master = cluster.serve("--rescan", "300", *watch)
    cluster.work()
    (cluster.root / "first.log").write_bytes(b"ERROR before\n")
    wait_for(lambda: done(cluster, "first.log"))

    shutil.rmtree(cluster.root)
    wait_for(lambda: root_of(cluster).get("root_state") == "gone", timeout=10, interval=0.5)
    assert f"root {cluster.root} is gone" in master.output
    assert "GONE" in status(cluster)

    cluster.root.mkdir()
    (cluster.root / "again.log").write_bytes(b"ERROR after\n" * 2)
    # Well before the full rescan: the new folder is watched and scanned as soon as it is there.
    wait_for(lambda: done(cluster, "again.log"), timeout=15)
    assert f"root {cluster.root} is back: watching it again, and rescanning it" in master.output
    # Its events arrive: a file in a new folder is seen without waiting for a scan.
    (cluster.root / "host-a").mkdir()
    (cluster.root / "host-a" / "later.log").write_bytes(b"FATAL later\n")
    wait_for(lambda: done(cluster, "host-a/later.log"), timeout=15)
    master_doc = root_of(cluster)
    assert (master_doc["root_state"], master_doc["root_rewatched"]) == ("ok", 1)
    assert "watched again 1 time" in status(cluster)
    assert cluster.summary()["totals"]["error_lines"] == 4


def test_a_root_replaced_by_another_folder_is_watched_in_its_place(cluster: Cluster) -> None:
    master = cluster.serve("--rescan", "300")
    cluster.work()
    (cluster.root / "first.log").write_bytes(b"ERROR before\n")
    wait_for(lambda: done(cluster, "first.log"))  # the first scan is over
    other = cluster.tmp / "other"
    other.mkdir()
    (other / "moved-in.log").write_bytes(b"ERROR moved in\n")
    cluster.root.rename(cluster.tmp / "old-root")
    other.rename(cluster.root)
    wait_for(lambda: done(cluster, "moved-in.log"), timeout=15)
    assert "watching it again, and rescanning it" in master.output
    (cluster.root / "new.log").write_bytes(b"ERROR new\n")
    wait_for(lambda: done(cluster, "new.log"), timeout=15)
    assert root_of(cluster)["root_rewatched"] == 1
