"""Video data pipeline: annotation readers, decoding, sampling, transforms and loaders.

The training loop needs only::

    from tdsclip.data import build_dataset, build_loader, normalize_video, BadSampleTracker

Names are imported on first use (PEP 562), so light tools such as `python -m
tdsclip.data.verify` do not pay for importing torch and timm. See docs/datasets.md for
preparing SSv1, SSv2, Kinetics-400 and custom datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnnotationError": "tdsclip.data.annotations",
    "BadSampleTracker": "tdsclip.data.bad_samples",
    "DataConfig": "tdsclip.data.build",
    "build_dataset": "tdsclip.data.build",
    "read_video_views": "tdsclip.data.build",
    "DataLoadError": "tdsclip.data.datasets",
    "VideoEvalDataset": "tdsclip.data.datasets",
    "VideoTrainDataset": "tdsclip.data.datasets",
    "BackendUnavailableError": "tdsclip.data.decoding",
    "VideoReadError": "tdsclip.data.decoding",
    "DeviceAugment": "tdsclip.data.device_augment",
    "EvalSampler": "tdsclip.data.loader",
    "TrainSampler": "tdsclip.data.loader",
    "build_loader": "tdsclip.data.loader",
    "CLIP_MEAN": "tdsclip.data.transforms",
    "CLIP_STD": "tdsclip.data.transforms",
    "normalize_video": "tdsclip.data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
