"""Admission control: per-device queues, device memory budgets and the bytes in flight.

A request is admitted to a device before it waits for the device's lock. ``OverloadedError``
(503 with ``Retry-After``) rejects it in three cases. The device may already have
``max_queued`` requests waiting. The device memory reserved there plus this request's may
exceed the device's budget. Or the body bytes held by requests in progress plus this body's
may exceed ``max_inflight_bytes``. All counters are guarded by one lock, as threads from the
thread pool and the event loop both update them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from clconv.errors import OverloadedError
from clconv.settings import Settings

# Seconds sent in Retry-After. A request on the CPU runtimes takes from a few
# milliseconds to a few seconds, so one second is a guess, not a measured drain time.
RETRY_AFTER_S = 1


@dataclass
class DeviceLoad:
    """Requests waiting for and running on one device, and the device memory they reserve."""

    queued: int = 0
    running: int = 0
    reserved_bytes: int = 0
    budget_bytes: int = 0


class Admission:
    """Counters and limits shared by every request of one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._loads: dict[str, DeviceLoad] = {}
        self.inflight_bytes = 0

    def loads(self) -> dict[str, DeviceLoad]:
        """Return a copy of every device's counters, for metrics."""
        with self._lock:
            return {key: DeviceLoad(**vars(load)) for key, load in self._loads.items()}

    def check_body(self, declared_bytes: int) -> None:
        """Reject a body before it is read when its declared size would exceed the budget."""
        with self._lock:
            self._check_inflight(declared_bytes)

    @contextmanager
    def hold_body(self, size: int) -> Iterator[None]:
        """Count ``size`` body bytes as in flight until the block ends."""
        with self._lock:
            self._check_inflight(size)
            self.inflight_bytes += size
        try:
            yield
        finally:
            with self._lock:
                self.inflight_bytes -= size

    def _check_inflight(self, size: int) -> None:
        limit = self.settings.max_inflight_bytes
        if self.inflight_bytes + size > limit:
            raise OverloadedError(
                f"requests in progress hold {self.inflight_bytes} body bytes, and this body's "
                f"{size} bytes would exceed the limit of {limit}; retry after "
                f"{RETRY_AFTER_S} s, or raise CLCONV_MAX_INFLIGHT_BYTES",
                "body",
                retry_after_s=RETRY_AFTER_S,
            )

    @contextmanager
    def admit(self, device_id: str, device_bytes: int, budget_bytes: int) -> Iterator[Ticket]:
        """Queue a request on a device, or raise ``OverloadedError`` when it is full."""
        with self._lock:
            load = self._loads.setdefault(device_id, DeviceLoad())
            load.budget_bytes = budget_bytes
            if load.queued >= self.settings.max_queued:
                raise OverloadedError(
                    f"device {device_id} already has {load.queued} requests waiting, the limit "
                    f"(CLCONV_MAX_QUEUED); retry after {RETRY_AFTER_S} s",
                    "device",
                    retry_after_s=RETRY_AFTER_S,
                )
            if load.reserved_bytes + device_bytes > budget_bytes:
                raise OverloadedError(
                    f"device {device_id} has {load.reserved_bytes} of its {budget_bytes} bytes "
                    f"of memory budget reserved, and this request needs {device_bytes} more; "
                    f"retry after {RETRY_AFTER_S} s",
                    "device",
                    retry_after_s=RETRY_AFTER_S,
                )
            load.queued += 1
            load.reserved_bytes += device_bytes
        ticket = Ticket(self, load)
        try:
            yield ticket
        finally:
            with self._lock:
                if ticket.started:
                    load.running -= 1
                else:
                    load.queued -= 1
                load.reserved_bytes -= device_bytes

    def _start(self, load: DeviceLoad) -> None:
        with self._lock:
            load.queued -= 1
            load.running += 1


class Ticket:
    """An admitted request; ``start`` moves it from waiting to running on its device."""

    def __init__(self, admission: Admission, load: DeviceLoad) -> None:
        self._admission = admission
        self._load = load
        self.started = False

    def start(self) -> None:
        if not self.started:
            self._admission._start(self._load)
            self.started = True
