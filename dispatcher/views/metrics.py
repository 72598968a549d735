"""Prometheus metrics of a running master: ``serve --metrics HOST:PORT`` (the [metrics] extra).

Nothing is counted twice: each scrape reads the same counters ``logdispatch status`` shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from dispatcher.views.activity import SECONDS_BUCKETS, ActivitySnapshot
from dispatcher.views.httpguard import GuardedHandlerMixIn, GuardedServerMixIn, Serving
from workers.common import format_address, install_hint
from workers.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

WORKER_STATES = ("counting", "idle", "lost", "gone")

log = logging.getLogger(f"logdispatch.{__name__}")


class _MetricsServer(GuardedServerMixIn, WSGIServer):
    # prometheus_client's own server waits on every connection forever, with no cap.
    pass


class _MetricsHandler(GuardedHandlerMixIn, WSGIRequestHandler):
    pass


def serve_metrics(
    address: tuple[str, int],
    status: Callable[[], dict[str, Any]],
    activity: Callable[[], ActivitySnapshot],
) -> Serving:
    """Serve /metrics on ``address`` in a thread, until its ``stop()``."""
    try:
        from prometheus_client import make_wsgi_app
        from prometheus_client.registry import CollectorRegistry
    except ImportError:
        raise ConfigError(f"--metrics needs prometheus_client: {install_hint('metrics')}") from None
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry()
    registry.register(_MasterCollector(status, activity))
    ProcessCollector(registry=registry)  # CPU, memory, open files of the master
    try:
        httpd = _MetricsServer(address, _MetricsHandler, log, "the metrics server")
    except OSError as e:
        raise ConfigError(
            f"cannot serve metrics on {format_address(address)}: {e.strerror}"
        ) from None
    httpd.set_app(make_wsgi_app(registry))
    serving = Serving(httpd, "logdispatch-metrics")
    serving.start()
    return serving


class _MasterCollector:
    """Reads the master's counters at each scrape."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        activity: Callable[[], ActivitySnapshot],
    ) -> None:
        self._status = status
        self._activity = activity

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        doc = self._status()
        files, since = doc["files"], doc["since_start"]
        yield GaugeMetricFamily(
            "logdispatch_queue_depth",
            "Files waiting for a worker (retries included).",
            value=files["queued"] + files["retrying"],
        )
        yield GaugeMetricFamily(
            "logdispatch_in_flight", "Files leased to workers now.", value=files["in_flight"]
        )
        yield GaugeMetricFamily(
            "logdispatch_settling",
            "Files seen but not yet still long enough to be counted.",
            value=files["settling"],
        )
        finished = CounterMetricFamily(
            "logdispatch_files",
            "File versions that reached a final state since the master started.",
            labels=["state"],
        )
        for state in ("done", "failed", "vanished", "superseded"):
            finished.add_metric([state], since[state])
        yield finished
        for name, key, text in (
            (
                "logdispatch_lines",
                "lines",
                "Lines of new content counted since the master started, each piece once.",
            ),
            (
                "logdispatch_error_lines",
                "error_lines",
                "Error lines of new content counted since start, each piece once.",
            ),
            ("logdispatch_bytes", "bytes", "On-disk bytes of the files counted since start."),
        ):
            yield CounterMetricFamily(name, text, value=since[key])
        counts = CounterMetricFamily(
            "logdispatch_count_lines",
            "Lines each named counter matched in the new content counted since start, "
            "each piece once.",
            labels=["counter"],
        )
        for counter, lines in since["counts"].items():
            counts.add_metric([counter], lines)
        yield counts
        workers = GaugeMetricFamily(
            "logdispatch_workers",
            "Workers by state (connected: counting or idle).",
            labels=["state"],
        )
        for state in WORKER_STATES:
            workers.add_metric([state], sum(w["state"] == state for w in doc["workers"]))
        yield workers
        yield GaugeMetricFamily(
            "logdispatch_workers_connected",
            "Workers connected and heard from within the lease term.",
            value=sum(w["state"] in ("counting", "idle") for w in doc["workers"]),
        )
        snapshot = self._activity()
        bounds = [str(b) for b in SECONDS_BUCKETS] + ["+Inf"]
        yield HistogramMetricFamily(
            "logdispatch_file_seconds",
            "Seconds a worker took to count one file.",
            buckets=list(zip(bounds, snapshot.seconds_buckets, strict=True)),
            sum_value=snapshot.seconds_sum,
        )
