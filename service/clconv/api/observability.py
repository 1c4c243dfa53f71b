"""Prometheus metrics and JSON log lines for the HTTP adapter.

Each application gets its own ``CollectorRegistry``, so two apps in one process (tests) do not
share counters. Device gauges are read from ``Engine.admission`` when ``/metrics`` is scraped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from clconv.engine import Engine

# Latency buckets in seconds, from a cached 1x1 convolution (well under a millisecond) to a
# large request on a CPU runtime (tens of seconds).
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
TIMING_STAGES = ("queue", "upload", "compute", "download")
# Fields that ``JsonFormatter`` copies from a log record's ``extra`` into the JSON line.
LOG_FIELDS = (
    "request_id",
    "method",
    "path",
    "operation",
    "device",
    "algorithm",
    "status",
    "duration_ms",
    "timings_ms",
    "error_code",
)


class Metrics:
    """The server's Prometheus series."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "clconv_requests",
            "HTTP requests served, by operation and status code",
            ["operation", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "clconv_request_duration_seconds",
            "Wall time from the request's arrival to its response, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.stage_latency = Histogram(
            "clconv_device_stage_duration_seconds",
            "Device time of a convolution request by stage (timings_ms: queue, upload, "
            "compute, download), from OpenCL profiling events",
            ["operation", "stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

        self.bytes_in = Counter(
            "clconv_request_body_bytes",
            "Request body bytes received, by operation",
            ["operation"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "clconv_response_body_bytes",
            "Response body bytes sent, by operation",
            ["operation"],
            registry=registry,
        )

        self.running = Gauge(
            "clconv_device_running_requests",
            "Requests running on each device",
            ["device"],
            registry=registry,
        )
        self.queued = Gauge(
            "clconv_device_queued_requests",
            "Requests admitted to each device and waiting for it",
            ["device"],
            registry=registry,
        )
        self.reserved = Gauge(
            "clconv_device_memory_reserved_bytes",
            "Device memory reserved by admitted requests (the planner's estimate)",
            ["device"],
            registry=registry,
        )
        self.budget = Gauge(
            "clconv_device_memory_budget_bytes",
            "Device memory that admitted requests may reserve (CLCONV_DEVICE_MEMORY_FRACTION "
            "of global memory)",
            ["device"],
            registry=registry,
        )

        self.healthy = Gauge(
            "clconv_device_healthy",
            "1 while a device is in rotation, 0 once taken out after consecutive failures",
            ["device"],
            registry=registry,
        )
        self.inflight_bytes = Gauge(
            "clconv_inflight_body_bytes",
            "Request body bytes held by requests in progress (CLCONV_MAX_INFLIGHT_BYTES caps it)",
            registry=registry,
        )
        self.ready = Gauge(
            "clconv_ready",
            "1 while the server is ready for traffic (as /readyz reports)",
            registry=registry,
        )
        registry.register(ProgramCollector(engine))

    def observe(
        self,
        operation: str,
        status: int,
        duration_s: float,
        bytes_in: int,
        bytes_out: int,
        timings_ms: dict[str, float] | None,
    ) -> None:
        """Record one finished request."""
        self.requests.labels(operation, str(status)).inc()
        self.latency.labels(operation).observe(duration_s)
        self.bytes_in.labels(operation).inc(bytes_in)
        self.bytes_out.labels(operation).inc(bytes_out)
        for stage in TIMING_STAGES:
            if timings_ms is not None and stage in timings_ms:
                self.stage_latency.labels(operation, stage).observe(timings_ms[stage] / 1e3)

    def render(self) -> bytes:
        """Refresh the device gauges and return the text exposition format."""
        engine = self.engine
        if engine.started:
            for device in engine.registry.devices:
                self.healthy.labels(device.id).set(1 if device.healthy else 0)
        for device_id, load in engine.admission.loads().items():
            self.running.labels(device_id).set(load.running)
            self.queued.labels(device_id).set(load.queued)
            self.reserved.labels(device_id).set(load.reserved_bytes)
            self.budget.labels(device_id).set(load.budget_bytes)
        self.inflight_bytes.set(engine.admission.inflight_bytes)
        self.ready.set(1 if engine.serving else 0)
        return generate_latest(self.registry)


class ProgramCollector(Collector):
    """Program counters of every device's ``ProgramCache``, read when ``/metrics`` is scraped."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily]:
        programs = CounterMetricFamily(
            "clconv_programs",
            "OpenCL programs built in this process, by device and origin: source (compiled) "
            "or disk (a binary from CLCONV_CACHE_DIR)",
            labels=["device", "origin"],
        )
        rejected = CounterMetricFamily(
            "clconv_program_binaries_rejected",
            "Stored program binaries that were invalid or rejected by the runtime, so the "
            "program was compiled from source instead",
            labels=["device"],
        )
        if self.engine.started:
            for device in self.engine.registry.devices:
                counts = device.programs.counts()
                programs.add_metric([device.id, "source"], counts["built_from_source"])
                programs.add_metric([device.id, "disk"], counts["loaded_from_disk"])
                rejected.add_metric([device.id], counts["rejected_from_disk"])
        yield programs
        yield rejected


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the request fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
