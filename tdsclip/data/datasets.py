"""Video clip datasets for training and evaluation.

Legend: S repeated augmentations (`num_sample`), T segments, M local frames, C test clips,
K crops, V = C*K views, H = W = input size. Items are uint8; `normalize_video` runs on device.

Training items are reproducible: everything random about item `index` in `epoch` comes from a
generator seeded with (seed, epoch, index, attempt), so the clip does not depend on which worker
or process loads it. With `augment_on="device"` the item holds the one decoded, resized clip and
the drawn choices of its S copies instead of the S views; `DeviceAugment` makes the views on
the training device from exactly the same draws. A video that cannot be read is replaced by
another one chosen from that generator and reported in the item's `skipped` list. Evaluation
items are never replaced: they come back with `valid=False` and the error text, so the metric
can exclude them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from tdsclip.data.annotations import VideoRecord
from tdsclip.data.decoding import FrameSampler, VideoReadError, check_backend, read_video_frames
from tdsclip.data.device_augment import DeviceAugment, encode_params
from tdsclip.data.frame_folders import read_frame_folder
from tdsclip.data.rand_augment import parse_policy
from tdsclip.data.sampling import clip_centres, local_windows, train_centres
from tdsclip.data.transforms import VideoEvalTransform, VideoTrainTransform
from tdsclip.errors import RunError

ItemKey = int | tuple[int, int]
AugmentOn = Literal["device", "worker"]
AUGMENT_ON: tuple[AugmentOn, ...] = ("device", "worker")


class DataLoadError(RunError, RuntimeError):
    """Too many consecutive training samples could not be loaded (likely a wrong root)."""


class ClipReader:
    """Reads the frames of a record at the indices a sampler picks: (*indices, H, W, 3) uint8."""

    def __init__(self, *, backend: str, image_tmpl: str) -> None:
        self.backend = check_backend(backend)
        self.image_tmpl = image_tmpl

    def __call__(self, record: VideoRecord, sampler: FrameSampler) -> np.ndarray:
        if record.kind == "frames":
            return read_frame_folder(
                record.path,
                sampler,
                image_tmpl=self.image_tmpl,
                num_frames=record.num_frames,
                offset=record.offset,
            )
        return read_video_frames(record.path, sampler, backend=self.backend)


def _to_frames_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) numpy -> (N, 3, H, W) tensor, N = product of the leading dims."""
    flat = frames.reshape(-1, *frames.shape[-3:])  # (N, H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(flat)).permute(0, 3, 1, 2)  # (N, 3, H, W)


def split_key(key: ItemKey) -> tuple[int, int]:
    """A plain index (epoch 0) or the (index, epoch) pair the train sampler yields."""
    if isinstance(key, tuple):
        index, epoch = key
        return int(index), int(epoch)
    return int(key), 0


class _VideoDataset(Dataset):
    """What training and evaluation datasets share: records, class names, paths."""

    def __init__(self, records: list[VideoRecord], classes: list[str]) -> None:
        if not records:
            raise ValueError("the dataset has no videos")
        self.records = records
        self.classes = classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> list[str]:
        """Video file / frame folder of every index."""
        return [r.path for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


class VideoTrainDataset(_VideoDataset):
    """Training clips: TSN sampling, `num_sample` augmented copies per loaded video.

    Item (augment_on="worker"): {"video": uint8 (S, T, M, 3, H, W), "label": int64 (S,),
    "index": int (the video actually returned), "skipped": [(path, reason), ...] for every
    replaced bad sample}. With augment_on="device", "video" is replaced by "frames": the resized
    clip uint8 (T, M, 3, H', W'), and "params": its copies' choices (`encode_params`); "label"
    is already swapped where a copy is flipped. `device_augment` makes the views from them.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        classes: list[str],
        *,
        reader: ClipReader,
        transform: VideoTrainTransform,
        num_frames: int,
        num_local_frames: int,
        num_sample: int,
        seed: int = 0,
        max_consecutive_failures: int = 10,
        augment_on: AugmentOn = "worker",
    ) -> None:
        super().__init__(records, classes)
        if num_sample < 1:
            raise ValueError(f"num_sample must be >= 1, got {num_sample}")
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
        self.reader = reader
        self.transform = transform
        self.num_frames = num_frames
        self.num_local_frames = num_local_frames
        self.num_sample = num_sample
        self.seed = seed
        self.max_consecutive_failures = max_consecutive_failures
        self.augment_on = augment_on
        self.device_augment: DeviceAugment | None = None
        self.policy = None
        if augment_on == "device":
            self.device_augment = DeviceAugment(input_size=transform.input_size)
            ra = transform.rand_augment
            self.policy = parse_policy(ra.policy) if ra is not None else None

    def set_seed(self, seed: int) -> None:
        """The run's seed; build_loader sets it before workers copy the dataset."""
        self.seed = seed

    def _sampler(self, sampling_seed: int) -> FrameSampler:
        # A fresh generator per call: the reader may ask twice (true frame count differs).
        def sample(n: int) -> np.ndarray:
            rng = np.random.default_rng(sampling_seed)
            centres = train_centres(n, self.num_frames, rng)  # (T,)
            return local_windows(centres, self.num_local_frames, n)  # (T, M)

        return sample

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, epoch = split_key(key)
        skipped: list[tuple[str, str]] = []
        current = index
        for attempt in range(self.max_consecutive_failures + 1):
            rng = np.random.default_rng([self.seed, epoch, index, attempt])
            record = self.records[current]
            try:
                frames = self.reader(record, self._sampler(int(rng.integers(2**63))))
            except VideoReadError as e:
                skipped.append((record.path, f"{e.kind}: {e.reason}"))
                current = int(rng.integers(len(self.records)))
                continue
            base = self.transform.resize(_to_frames_tensor(frames))  # (T*M, 3, H', W')
            item = self._views(base, record.label, rng)
            return {**item, "index": current, "skipped": skipped}
        recent = "; ".join(f"{path} ({reason})" for path, reason in skipped[-3:])
        raise DataLoadError(
            f"{len(skipped)} consecutive samples could not be loaded, starting at index {index} "
            f"(most recent: {recent}). Check the data `root` and the annotation file, or run "
            "`python -m tdsclip.data.verify` on them."
        )

    def _views(self, base: torch.Tensor, label: int, rng: np.random.Generator) -> dict[str, Any]:
        """The S copies' views (worker) or their drawn choices (device) of one resized clip."""
        params = [self.transform.sample(*base.shape[-2:], rng) for _ in range(self.num_sample)]
        labels = torch.tensor([self.transform.label(label, p) for p in params], dtype=torch.int64)
        t, m = self.num_frames, self.num_local_frames
        if self.augment_on == "device":
            return {
                "frames": base.view(t, m, *base.shape[1:]),  # (T, M, 3, H', W')
                "params": encode_params(params, self.policy),
                "label": labels,  # (S,)
            }
        # Draw all copies first, then apply: the same generator draws as drawing per copy.
        clips = [self.transform.apply(base, p) for p in params]  # (T*M, 3, H, W) each
        return {
            "video": torch.stack(clips).view(
                len(clips), t, m, *clips[0].shape[1:]
            ),  # (S, T, M, 3, H, W)
            "label": labels,  # (S,)
        }


class EvalViews:
    """The deterministic views of a video: C clips (segment points (k+1)/(C+1)) x K crops."""

    def __init__(
        self,
        *,
        transform: VideoEvalTransform,
        num_frames: int,
        num_local_frames: int,
        num_clips: int,
    ) -> None:
        self.transform = transform
        self.num_frames = num_frames
        self.num_local_frames = num_local_frames
        self.num_clips = num_clips

    @property
    def num_views(self) -> int:
        return self.num_clips * self.transform.num_crops

    def sample(self, n: int) -> np.ndarray:
        """Frame indices of all clips of an n-frame video: int64 (C, T, M)."""
        centres = clip_centres(n, self.num_frames, self.num_clips)  # (C, T)
        return local_windows(centres, self.num_local_frames, n)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """Decoded uint8 (C, T, M, H, W, 3) -> views uint8 (V, T, M, 3, H, W), clip-major."""
        crops = self.transform(_to_frames_tensor(frames))  # (K, C*T*M, 3, H, W)
        k, _, _, s, _ = crops.shape
        t, m = self.num_frames, self.num_local_frames
        crops = crops.reshape(k, self.num_clips, t, m, 3, s, s)  # (K, C, T, M, 3, H, W)
        return crops.transpose(0, 1).reshape(-1, t, m, 3, s, s)  # (C*K, T, M, 3, H, W)

    def empty(self) -> torch.Tensor:
        """All-zero views, the placeholder of an unreadable video: uint8 (V, T, M, 3, H, W)."""
        size = self.transform.input_size
        shape = (self.num_views, self.num_frames, self.num_local_frames, 3, size, size)
        return torch.zeros(shape, dtype=torch.uint8)


class VideoEvalDataset(_VideoDataset):
    """Evaluation views of every video; never replaces a bad video.

    Item: {"video": uint8 (V, T, M, 3, H, W), V = C*K clip-major (v = clip*K + crop),
    "label": int, "index": int, "valid": bool, "error": str ("" when valid)}. An unreadable
    video gives zeros with valid=False, so the metric can exclude and count it.
    """

    def __init__(
        self,
        records: list[VideoRecord],
        classes: list[str],
        *,
        reader: ClipReader,
        views: EvalViews,
    ) -> None:
        super().__init__(records, classes)
        self.reader = reader
        self.views = views

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, _ = split_key(key)
        record = self.records[index]
        try:
            video = self.views(self.reader(record, self.views.sample))
            valid, error = True, ""
        except VideoReadError as e:
            video = self.views.empty()
            valid, error = False, f"{record.path}: {e.kind}: {e.reason}"
        return {
            "video": video,
            "label": record.label,
            "index": index,
            "valid": valid,
            "error": error,
        }
