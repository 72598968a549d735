"""What master and workers share besides the wire: errors, names as text, addresses, authkey
loading, command-line conventions, logging and stop signals.

Nothing here needs ``multiprocessing``: ``logdispatch count`` starts with this and the counting
engine only.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import Callable
from types import FrameType
from typing import NamedTuple, NoReturn

from workers.errors import ConfigError

log = logging.getLogger(f"logdispatch.{__name__}")

AUTHKEY_ENV = "LOGDISPATCH_AUTHKEY"
DEFAULT_PORT = 50000
# Loopback unless the operator says otherwise: the protocol is pickle with no encryption.
DEFAULT_ADDRESS = ("127.0.0.1", DEFAULT_PORT)


def decode_path(path: bytes) -> str:
    """A path as text for documents (JSON, CSV), one-to-one with its bytes.

    Undecodable bytes become ``\\xNN`` and a real backslash ``\\\\``, so no two names look alike.
    """
    return path.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def encode_path(text: str) -> bytes:
    """The bytes of a path given as decode_path shows it (``\\xNN``, ``\\\\``); any other
    text as its own bytes."""
    parts = re.split(r"(\\\\|\\x[0-9a-fA-F]{2})", text)
    return b"".join(
        b"\\" if part == "\\\\" else bytes([int(part[2:], 16)]) if i % 2 else os.fsencode(part)
        for i, part in enumerate(parts)
    )


def printable(text: str) -> str:
    """Text safe for a terminal or a log line: control characters escaped (``\\n``...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def display_path(path: bytes) -> str:
    """A path for people: undecodable bytes and control characters escaped."""
    return printable(decode_path(path))


def error_text(error: BaseException) -> str:
    """One readable line for an error met while opening or reading a file or the network."""
    if isinstance(error, OSError):
        if error.errno == errno.ELOOP:
            return "a symbolic link on the path: not followed"
        if error.errno == errno.ENXIO:
            return "not a regular file"  # a socket or a device without a reader
        if error.strerror:
            return error.strerror
    if isinstance(error, EOFError) and not str(error):
        return "connection closed"
    return str(error) or type(error).__name__


def install_hint(extra: str) -> str:
    """How to add an extra: the project is not on the package index, so from the checkout or
    from a wheel built from it."""
    return f"pip install '.[{extra}]' in a checkout, or 'FILE.whl[{extra}]' for a wheel"


def parse_address(
    text: str, default_host: str = DEFAULT_ADDRESS[0], option: str = "--address"
) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``:PORT`` (HOST then defaults to loopback), given as ``option``."""
    if "://" in text:  # http://host:port would otherwise read as an IPv6 host
        raise ConfigError(f"{option} wants HOST:PORT, not a URL: {text!r}")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(f"{option} {text!r} is not HOST:PORT")
    if ":" in host:
        # multiprocessing.connection opens every (host, port) address as an IPv4 socket.
        raise ConfigError(f"{option} {text!r}: IPv6 is not supported; use IPv4 or a host name")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{option} {text!r}: port out of range")
    return host or default_host, port


def format_address(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def format_peer(address: object) -> str:
    """A connection's remote address as text: ``HOST:PORT`` for an IP peer, else as given."""
    if isinstance(address, tuple) and len(address) >= 2:
        return format_address((str(address[0]), int(address[1])))
    return str(address)


# What `logdispatch work` does, in its help and in `logdispatch -h`'s list.
WORK_ABOUT = "take files from a master, count them and send it their counts"


class Parser(argparse.ArgumentParser):
    """An argument parser whose unknown option error names the closest known option, if one
    is close; its subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        if message.startswith(UNRECOGNIZED):
            message += suggestion(self, message[len(UNRECOGNIZED) :].split())
        super().error(message)


# How argparse begins its message for arguments no option or positional took.
UNRECOGNIZED = "unrecognized arguments: "


def suggestion(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """``; did you mean --settle?`` for the first of ``unknown`` that is close to one of
    ``parser``'s options, else nothing."""
    known = [flag for action in parser._actions for flag in action.option_strings]
    for word in unknown:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
            if close:
                return f"; did you mean {close[0]}?"
    return ""


def add_connection_arguments(parser: argparse.ArgumentParser, address_help: str) -> None:
    """``--address``, ``--authkey-file`` and the TLS files, the same for the master and the
    workers."""
    parser.add_argument(
        "--address",
        default=format_address(DEFAULT_ADDRESS),
        metavar="H:P",
        help=f"{address_help} (default: %(default)s)",
    )
    parser.add_argument(
        "--authkey-file", metavar="F", help=f"shared secret (or set ${AUTHKEY_ENV})"
    )
    parser.add_argument(
        "--tls-cert",
        metavar="F",
        help="this host's certificate (PEM): with --tls-key and --tls-ca, the connection is "
        "TLS, each end's certificate checked against the CA, the authkey still required",
    )
    parser.add_argument("--tls-key", metavar="F", help="the private key of --tls-cert (PEM)")
    parser.add_argument(
        "--tls-ca",
        metavar="F",
        help="the CA certificate(s) (PEM) that the other end's certificate must be signed by",
    )


class TLSFiles(NamedTuple):  # not a dataclass: every command, `count` too, imports this
    """A host's certificate and key, and the CA that signs the other ends' certificates."""

    cert: str
    key: str
    ca: str


def tls_files(args: argparse.Namespace) -> TLSFiles | None:
    """The TLS files given by ``add_connection_arguments``' options: all three or none."""
    given = (args.tls_cert, args.tls_key, args.tls_ca)
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("--tls-cert, --tls-key and --tls-ca go together: give all three")
    return TLSFiles(args.tls_cert, args.tls_key, args.tls_ca)


# The most named counters one count may carry (docs/counting.md, "Named counters"): each is
# searched on every line, and a result carries one count for each.
MAX_COUNTERS = 32
# A counter's name: short, and the same in a ledger column, a JSON key or a command line.
COUNTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

# How a worker searches literal error patterns; docs/counting.md holds for each.
ENGINES = ("auto", "python", "hyperscan")


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    """``--engine``, the same for ``count``, ``run`` and ``work``."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="what searches literal-word error patterns and counts newlines: auto takes the "
        "[fast] extra (hyperscan, stringzilla) when installed, python the standard library "
        "only, hyperscan requires the extra (default: auto)",
    )


# The most bytes one compressed file may expand to. Real logs compress 10 to 50 times, so this
# lets through any log up to a compressed size of a gigabyte or more, while a decompression bomb
# (a few kilobytes that expand without end) is refused once it has cost that much work.
MAX_EXPANDED_BYTES = 64 * 1024**3
_SIZE_UNITS = ("", "K", "M", "G", "T")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``10G``, ``500M``, ``1.5GiB``, ``64k`` or plain ``4096`` (units of 1024)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = found.groups()
    size = int(float(number) * 1024 ** _SIZE_UNITS.index(unit.upper()))
    if size < 1:
        raise ValueError(f"a size must be at least 1 byte: {text!r}")
    return size


parse_size.__name__ = "size"  # argparse and the configuration name the type in their errors


def format_size(size: int) -> str:
    """``64 GiB``, ``1.5 GiB``, ``500 MiB``, ``100 bytes``: as a person would write it."""
    for power in range(len(_SIZE_UNITS) - 1, 0, -1):
        unit = 1024**power
        if size >= unit:
            whole, part = divmod(size, unit)
            shown = str(whole) if not part else f"{size / unit:.1f}"
            return f"{shown} {_SIZE_UNITS[power]}iB"
    return f"{size} byte{'' if size == 1 else 's'}"


def add_max_expanded_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-expanded``, the same for ``count``, ``run`` and ``work``."""
    parser.add_argument(
        "--max-expanded",
        type=parse_size,
        default=MAX_EXPANDED_BYTES,
        metavar="SIZE",
        help="refuse a compressed file that expands to more than SIZE (10G, 500M...): a "
        f"decompression bomb (default: {format_size(MAX_EXPANDED_BYTES)})",
    )


def setup_logging(verbosity: int, base: int = logging.INFO, per_file: bool | None = None) -> int:
    """Log to stderr from ``base`` made louder by ``verbosity`` (-v minus -q); returns the level.

    ``per_file``: whether the PER_FILE_LOG lines are logged (None: with -v, ``verbosity`` > 0).

    Every line names the module it comes from, below ``logdispatch`` (for instance
    ``logdispatch.dispatcher.master.loop``, ``logdispatch.workers.worker``).
    """
    level = min(max(base - 10 * verbosity, logging.DEBUG), logging.CRITICAL)
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    # One INFO line per file counted: with -v only, whatever the command's own level.
    if per_file is None:
        per_file = verbosity > 0
    logging.getLogger(PER_FILE_LOG).setLevel(logging.INFO if per_file else logging.WARNING)
    return level


# The loggers below this one log a line per file counted (the master's .master, the worker's
# .worker): too many lines for an INFO default, so setup_logging() enables them on -v only.
PER_FILE_LOG = "logdispatch.files"


class StopSignals:
    """SIGINT/SIGTERM: the first asks for a warm stop, a second one exits at once.

    The handler only calls ``on_first``, which must only set a flag: a handler must neither
    take a lock nor interrupt a proxied call in flight.
    """

    def __init__(self, on_first: Callable[[], None] = lambda: None) -> None:
        self._on_first = on_first
        self.first: int | None = None  # the first signal received
        self._received = 0
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def then(self, on_first: Callable[[], None]) -> None:
        """From now on a first signal calls ``on_first``; one received already calls it now.

        For a program that takes its signals before what they stop exists: a stop meanwhile is
        a flag, never a KeyboardInterrupt between two statements of its start-up.
        """
        self._on_first = on_first  # before the check: a signal between the two calls it
        if self.first is not None:
            on_first()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received += 1
        if self._received > 1:
            os._exit(128 + signum)
        self.first = signum
        self._on_first()


# The key files whose mode was warned of.
_WARNED_MODES: set[str] = set()


def load_authkey(path: str | None) -> bytes:
    """The shared secret from ``path``, else from $LOGDISPATCH_AUTHKEY; there is no default."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                key = f.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read authkey file {path}: {e.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and path not in _WARNED_MODES:
            _WARNED_MODES.add(path)  # once, though `config` reads it for two views
            log.warning(
                "authkey file %s is readable by group or others (mode %o): chmod 600 it",
                path,
                stat.S_IMODE(mode),
            )
        source = f"authkey file {path}"
    elif os.environ.get(AUTHKEY_ENV):  # an empty variable is as good as unset
        key = os.environ[AUTHKEY_ENV].strip().encode()
        source = f"${AUTHKEY_ENV}"
    else:
        raise ConfigError(f"an authkey is required: pass --authkey-file FILE or set ${AUTHKEY_ENV}")
    if not key:
        raise ConfigError(f"{source} is empty")
    return key


def host_of(worker_id: str) -> str:
    """The host part of a worker id (``host:pid``)."""
    return worker_id.rpartition(":")[0] or worker_id
