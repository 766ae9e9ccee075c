"""Main-process bookkeeping of training samples that were replaced because they failed to load."""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger(__name__)


class BadSampleTracker:
    """Logs every bad path once (with its reason) and counts replacements per epoch.

    Feed it `batch["skipped"]` after every training step::

        tracker.update(batch["skipped"])
        ...
        metrics.update(tracker.epoch_summary()); tracker.reset_epoch()
    """

    def __init__(self) -> None:
        self._reported: set[str] = set()
        self._epoch: Counter[str] = Counter()
        self._reasons: dict[str, str] = {}

    def update(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            self._epoch[path] += 1
            self._reasons[path] = reason
            if path not in self._reported:
                self._reported.add(path)
                logger.warning("bad training sample replaced: %s (%s)", path, reason)

    def epoch_summary(self) -> dict[str, object]:
        """{"replaced": replacements this epoch, "bad_videos": distinct paths this epoch,
        "bad_videos_total": distinct paths since creation, "paths": {path: [count, reason]}}."""
        return {
            "replaced": sum(self._epoch.values()),
            "bad_videos": len(self._epoch),
            "bad_videos_total": len(self._reported),
            "paths": {path: [count, self._reasons[path]] for path, count in self._epoch.items()},
        }

    def reset_epoch(self) -> None:
        self._epoch.clear()
