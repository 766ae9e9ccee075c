"""Samplers, collate functions and the DataLoader factory.

Train: `TrainSampler` shuffles deterministically from (seed, epoch), splits the permutation
across ranks like `DistributedSampler` (padding to a multiple of the world size) and yields
`(index, epoch)` pairs, so persistent workers know the epoch without `set_epoch` reaching their
copy of the dataset. `set_epoch(epoch, start=k)` resumes exactly after k consumed samples.

Eval: `EvalSampler` gives rank r the indices r, r+W, r+2W, ... with no padding, so every video
is evaluated exactly once across ranks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tdsclip.data.datasets import VideoEvalDataset, VideoTrainDataset

SPLITS = ("train", "val", "test")


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class TrainSampler(Sampler[tuple[int, int]]):
    """Distributed shuffling sampler yielding (index, epoch); see the module docstring."""

    def __init__(self, dataset_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        if dataset_size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.dataset_size = dataset_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_samples = -(-dataset_size // world_size)  # per rank, after padding
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip this rank's first `start` samples."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        self.epoch = epoch
        self.start = start

    def rank_indices(self) -> np.ndarray:
        """This rank's full share of the epoch (before skipping `start`): int64 (num_samples,)."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset_size)
        total = self.num_samples * self.world_size
        order = np.resize(order, total)  # pads by repeating from the start
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.rank_indices()[self.start :].tolist():
            yield index, self.epoch

    def __len__(self) -> int:
        return self.num_samples - self.start


class EvalSampler(Sampler[int]):
    """Rank r of W gets r, r+W, r+2W, ...: disjoint, complete, no padding duplicates."""

    def __init__(self, dataset_size: int, *, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        self.indices = range(rank, dataset_size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Worker-augmented items: `video` (B, S, T, M, 3, H, W). Items for the device
    (augment_on=device): `frames`, a list of B uint8 (T, M, 3, H', W') clips (sizes may differ,
    e.g. Kinetics resized by the short side), and `params`, each (B, S, ...)."""
    batch = {
        "label": torch.stack([it["label"] for it in items]),  # (B, S)
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),  # (B,)
        "skipped": [entry for it in items for entry in it["skipped"]],
    }
    if "frames" in items[0]:
        batch["frames"] = [it["frames"] for it in items]
        batch["params"] = {
            k: torch.stack([it["params"][k] for it in items]) for k in items[0]["params"]
        }
    else:
        batch["video"] = torch.stack([it["video"] for it in items])  # (B, S, T, M, 3, H, W)
    return batch


def collate_eval(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "video": torch.stack([it["video"] for it in items]),  # (B, V, T, M, 3, H, W)
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),  # (B,)
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),  # (B,)
        "valid": torch.tensor([it["valid"] for it in items], dtype=torch.bool),  # (B,)
        "error": [it["error"] for it in items],
    }


class WorkerSeeder:
    """worker_init_fn: seeds `random`, `np.random` and torch from (seed, epoch, rank, worker).

    A safety net for library code that draws from global RNGs; the dataset itself uses only
    explicit per-item generators. The epoch is read from the sampler when workers start.
    """

    def __init__(self, seed: int, rank: int, sampler: Sampler[Any]) -> None:
        self.seed = seed
        self.rank = rank
        self.sampler = sampler

    def __call__(self, worker_id: int) -> None:
        epoch = getattr(self.sampler, "epoch", 0)
        state = np.random.SeedSequence([self.seed, epoch, self.rank, worker_id]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[1]))


def build_loader(
    dataset: Dataset,
    *,
    split: str,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = True,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    drop_last: bool | None = None,
) -> DataLoader:
    """DataLoader for a dataset from `build_dataset`; see the module docstring for sampling.

    drop_last defaults to (split == "train"). persistent_workers and prefetch_factor only apply
    with num_workers > 0.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split == "train":
        if not isinstance(dataset, VideoTrainDataset):
            raise TypeError(
                f"split 'train' needs a VideoTrainDataset, got {type(dataset).__name__}"
            )
        dataset.set_seed(seed)
        sampler: Sampler[Any] = TrainSampler(
            len(dataset), seed=seed, rank=rank, world_size=world_size
        )
        collate = collate_train
    else:
        if not isinstance(dataset, VideoEvalDataset):
            raise TypeError(
                f"split {split!r} needs a VideoEvalDataset, got {type(dataset).__name__}"
            )
        sampler = EvalSampler(len(dataset), rank=rank, world_size=world_size)
        collate = collate_eval
    workers = num_workers > 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=(split == "train") if drop_last is None else drop_last,
        persistent_workers=persistent_workers and workers,
        prefetch_factor=prefetch_factor if workers else None,
        worker_init_fn=WorkerSeeder(seed, rank, sampler),
        # Own generator: the loader's base-seed draw must not consume the global torch RNG.
        generator=torch.Generator().manual_seed(seed),
    )
