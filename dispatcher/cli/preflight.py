"""What ``serve``, ``run`` and ``work`` would refuse at start, every problem at once.

``logdispatch config COMMAND ...`` lists them all without starting anything; ``serve`` checks
its ports and extras with ``check_listening`` before it opens the ledger, so that a port in use
or a missing extra writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from dispatcher.versions import OnDone
from workers.common import (
    error_text,
    format_address,
    install_hint,
    load_authkey,
    parse_address,
    tls_files,
)
from workers.config import REQUIRED
from workers.errors import ConfigError
from workers.matching import check_engine

# The commands that start something; the others only read.
CHECKED = ("serve", "run", "work")


def problems(command: str, args: argparse.Namespace) -> list[str]:
    """Each thing that would stop ``command`` with ``args`` at start, in words for the operator."""
    found: list[str] = []
    if command in ("serve", "run"):
        root = _root("ROOT", args.root)
        found += root
        found += _state(args.state)
        found += _on_done(args.on_done, args.root)
        if not root:  # the settings' own checks, the root's once more aside
            from dispatcher.cli.serve import master_config  # serve imports this module

            found += _refused(lambda: master_config(args, b"-"))
    if command == "run" and args.workers < 1:
        found.append("--workers must be at least 1")
    if command == "work":
        if args.root is not None:
            found += _root("--root", Path(args.root))
        found += _refused(lambda: parse_address(args.address))
        if args.processes < 1:
            found.append("--processes must be at least 1")
    if command in ("serve", "work"):
        found += _refused(lambda: load_authkey(args.authkey_file))
        found += _refused(lambda: tls_files(args))
    if command in ("run", "work"):
        found += _refused(lambda: check_engine(args.engine))
    if command == "serve":
        found += listening_problems(args)
    return list(dict.fromkeys(found))  # a bad --on-done is said by two checks


def _refused(check: Callable[[], object]) -> list[str]:
    """What ``check()`` refuses, as ConfigError or ValueError says it: one problem or none."""
    try:
        check()
    except (ConfigError, ValueError) as e:
        return [str(e)]
    return []


def check_listening(args: argparse.Namespace) -> None:
    """ConfigError naming every port of ``serve`` that cannot be bound and every extra missing."""
    found = listening_problems(args)
    if found:
        raise ConfigError("; ".join(found))


def listening_problems(args: argparse.Namespace) -> list[str]:
    """The ports ``serve`` would listen on, bound all together as it would, and the extras they
    need."""
    found = []
    if args.metrics is not None and importlib.util.find_spec("prometheus_client") is None:
        found.append(f"--metrics needs prometheus_client: {install_hint('metrics')}")
    wanted = [("--address", args.address, "cannot listen on {}")]
    if args.http is not None:
        wanted.append(("--http", args.http, "cannot serve the report on {}"))
    if args.metrics is not None:
        wanted.append(("--metrics", args.metrics, "cannot serve metrics on {}"))
    with contextlib.ExitStack() as held:  # held together: two options on one port fail
        for option, text, refusal in wanted:
            try:
                address = parse_address(text, option=option)
            except ConfigError as e:
                found.append(str(e))
                continue
            sock = held.enter_context(socket.socket())
            # As the servers themselves do: a port left in TIME_WAIT by the last run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                # With SO_REUSEADDR, two sockets may bind one port: listening is what conflicts.
                sock.listen(1)
            except OSError as e:
                found.append(f"{refusal.format(format_address(address))}: {error_text(e)}")
    return found


def _root(name: str, root: Path | object) -> list[str]:
    if root is REQUIRED:
        return [f"{name} is required: give it on the command line or as root in --config"]
    assert isinstance(root, Path)
    # os.path's, not Path's: they answer False on any OSError (a name too long, a folder
    # that cannot be searched) rather than raise it.
    if not os.path.exists(root):
        return [f"{name} {root} does not exist"]
    if not os.path.isdir(root):
        return [f"{name} {root} is not a directory"]
    if not os.access(root, os.R_OK | os.X_OK):
        return [f"{name} {root} cannot be read"]
    return []


def _state(state: Path) -> list[str]:
    """The ledger's folder: written in if it exists, else created under its nearest folder."""
    if os.path.exists(state) and not os.path.isdir(state):
        return [f"--state {state} is not a directory"]
    problem = _not_writable(state)
    return [] if problem is None else [f"--state {state}: {problem}"]


def _on_done(text: str, root: Path | object) -> list[str]:
    try:
        on_done = OnDone.parse(text)
    except ConfigError as e:
        return [str(e)]
    if on_done.archive is None:
        return []
    archive = Path(os.fsdecode(on_done.archive))
    shown = f"--on-done move:{archive}"
    if isinstance(root, Path) and os.path.isdir(root):
        real_root = os.path.realpath(root)
        if os.path.commonpath([os.path.realpath(archive), real_root]) == real_root:
            return [
                f"{shown}: the folder is inside the watched root {root}, where what is moved "
                "would be counted again"
            ]
    if os.path.exists(archive) and not os.path.isdir(archive):
        return [f"{shown}: not a directory"]
    problem = _not_writable(archive)
    return [] if problem is None else [f"{shown}: {problem}"]


def _not_writable(folder: Path) -> str | None:
    """Why a file cannot be made in ``folder`` or, while it does not exist, in the nearest
    folder above it that does (None: it can); a probe file is made and removed."""
    target = Path(os.path.abspath(folder))
    while not os.path.exists(target) and target != target.parent:
        target = target.parent
    if not os.path.isdir(target):
        return f"cannot create it: {target} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".logdispatch-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if target == Path(os.path.abspath(folder)):
            return f"cannot write to it: {error_text(e)}"
        return f"cannot create it in {target}: {error_text(e)}"
    return None
