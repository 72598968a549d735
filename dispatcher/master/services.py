"""The shape of the master's parts that run on threads of their own (scanner, watcher,
manager server), and the server the master builds unless it is handed one: a test gives it a
server without sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dispatcher.master.config import MasterConfig
from dispatcher.transport.server import ManagerServer, ResultSink, StatusService
from dispatcher.transport.taskqueue import TaskQueue
from workers.errors import ConfigError


class Service(Protocol):
    """A part of the master that runs on threads of its own. ``stop()`` returns once they are
    done (or given up on) and is safe when ``start()`` never ran or failed."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Server(Service, Protocol):
    """Serves the task queue, the result sink and the status to workers and clients."""

    @property
    def address(self) -> tuple[str, int]: ...


# What builds the server from the task queue, the result sink, the status service and the
# callback for a closed connection's session.
ServerFactory = Callable[[TaskQueue, ResultSink, StatusService, Callable[[int], None]], Server]


def manager_server(config: MasterConfig) -> ServerFactory:
    """The manager server on ``config.address``, as workers reach it."""

    def build(
        tasks: TaskQueue,
        sink: ResultSink,
        status: StatusService,
        on_disconnect: Callable[[int], None],
    ) -> Server:
        try:
            return ManagerServer(
                config.address,
                config.authkey,
                tasks,
                sink,
                status=status,
                on_disconnect=on_disconnect,
                tls=config.tls,
            )
        except OSError as e:
            host, port = config.address
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None

    return build
