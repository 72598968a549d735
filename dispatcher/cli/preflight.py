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
import stat
import tempfile
from pathlib import Path

from dispatcher.versions import OnDone
from workers.common import AUTHKEY_ENV, format_address, install_hint, parse_address
from workers.config import REQUIRED
from workers.errors import ConfigError
from workers.matching import check_engine

# The commands that start something; the others only read.
CHECKED = ("serve", "run", "work")


def problems(command: str, args: argparse.Namespace) -> list[str]:
    """Each thing that would stop ``command`` with ``args`` at start, in words for the operator."""
    found: list[str] = []
    if command in ("serve", "run"):
        found += _root("ROOT", args.root)
        found += _state(args.state)
        found += _on_done(args.on_done, args.root)
    if command == "work" and args.root is not None:
        found += _root("--root", Path(args.root))
    if command in ("serve", "work"):
        found += _authkey(args.authkey_file)
    if command in ("run", "work"):
        try:
            check_engine(args.engine)
        except (ConfigError, ValueError) as e:
            found.append(str(e))
    if command == "serve":
        found += listening_problems(args)
    return found


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
    wanted = [(args.address, "cannot listen on {}")]
    if args.http is not None:
        wanted.append((args.http, "cannot serve the report on {}"))
    if args.metrics is not None:
        wanted.append((args.metrics, "cannot serve metrics on {}"))
    with contextlib.ExitStack() as held:  # held together: two options on one port fail
        for text, refusal in wanted:
            try:
                address = parse_address(text)
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
                found.append(f"{refusal.format(format_address(address))}: {_reason(e)}")
    return found


def _root(name: str, root: Path | object) -> list[str]:
    if root is REQUIRED:
        return [f"{name} is required: give it on the command line or as root in --config"]
    assert isinstance(root, Path)
    if not root.exists():
        return [f"{name} {root} does not exist"]
    if not root.is_dir():
        return [f"{name} {root} is not a directory"]
    if not os.access(root, os.R_OK | os.X_OK):
        return [f"{name} {root} cannot be read"]
    return []


def _state(state: Path) -> list[str]:
    """The ledger's folder: written in if it exists, else created under its nearest folder."""
    if state.exists() and not state.is_dir():
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
    if isinstance(root, Path) and root.is_dir():
        real_root = os.path.realpath(root)
        if os.path.commonpath([os.path.realpath(archive), real_root]) == real_root:
            return [
                f"{shown}: the folder is inside the watched root {root}, where what is moved "
                "would be counted again"
            ]
    if archive.exists() and not archive.is_dir():
        return [f"{shown}: not a directory"]
    problem = _not_writable(archive)
    return [] if problem is None else [f"{shown}: {problem}"]


def _not_writable(folder: Path) -> str | None:
    """Why a file cannot be made in ``folder`` or, while it does not exist, in the nearest
    folder above it that does (None: it can); a probe file is made and removed."""
    target = Path(os.path.abspath(folder))
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        return f"cannot create it: {target} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".logdispatch-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if target == Path(os.path.abspath(folder)):
            return f"cannot write to it: {_reason(e)}"
        return f"cannot create it in {target}: {_reason(e)}"
    return None


def _authkey(path: str | None) -> list[str]:
    if path is None:
        if AUTHKEY_ENV not in os.environ:
            return [f"an authkey is required: pass --authkey-file FILE or set ${AUTHKEY_ENV}"]
        return [] if os.environ[AUTHKEY_ENV].strip() else [f"${AUTHKEY_ENV} is empty"]
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            key = f.read().strip()
    except OSError as e:
        return [f"cannot read authkey file {path}: {_reason(e)}"]
    found = []
    if not key:
        found.append(f"authkey file {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        found.append(
            f"authkey file {path} is readable by group or others (mode {stat.S_IMODE(mode):o}): "
            "chmod 600 it"
        )
    return found


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
