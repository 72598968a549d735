"""A short run of scripts/soak.py: random kills of workers and master while files arrive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


def test_short_soak_loses_nothing_and_counts_nothing_twice() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--seconds",
            "15",
            "--files",
            "200",
            "--seed",
            "7",
            "--drain",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "lost: 0, counted twice: 0, wrong: 0", result.stdout
    assert "killed" in result.stdout
    assert result.returncode == 0
