"""Preemption: SIGTERM / SIGUSR1 / SIGUSR2 become a checkpoint at the next step boundary."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


class PreemptionSignal:
    """Records SIGTERM / SIGUSR1 / SIGUSR2 (cluster preemption, time limits) so that the loop
    can save a checkpoint at the next step boundary and exit cleanly.

    A handler that was installed before (submitit's requeue handler, say) is called by
    :meth:`forward` once the checkpoint is safe, so requeueing still happens.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is None:
            name = signal.Signals(signum).name
            log.warning("received %s: saving a checkpoint at the next step, then exiting", name)
        self.received = signum

    def forward(self) -> None:
        """Call the previously installed Python handler of the received signal, if any."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous):
            previous(self.received, None)

    @contextlib.contextmanager
    def installed(self) -> Iterator[PreemptionSignal]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
