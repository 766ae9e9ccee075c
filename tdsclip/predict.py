"""Classify one video: `python -m tdsclip.predict checkpoint=PATH video=PATH [topk=5]`.

Prints the top-k class names with probabilities (softmax averaged over the test views of
the data config: clips x crops). Class names come from a training checkpoint, else from the
data config's label file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from tdsclip import runtime

log = logging.getLogger("tdsclip.predict")


def predict(cfg: DictConfig) -> list[tuple[str, float]]:
    from tdsclip.checkpoint import load_checkpoint, model_from_checkpoint
    from tdsclip.data import build_dataset, normalize_video, read_video_views

    ckpt = load_checkpoint(cfg.checkpoint)
    device = runtime.resolve_device(cfg.trainer.device, 0)
    precision = runtime.resolve_precision(cfg.trainer.precision, device)
    dtype = precision.dtype
    runtime.apply_threads(runtime.plan_threads(cfg.trainer.threads, num_workers=0))
    log.info("precision: %s", precision.describe())
    model = model_from_checkpoint(ckpt, pretrained=cfg.pretrained).to(device)
    if dtype is not None:
        model.backbone.cast_weights(dtype)
    data_cfg = cfg.data
    if ckpt.get("config"):  # a training checkpoint: decode exactly as its run did
        data_cfg = ckpt["config"]["data"]
    classes = ckpt.get("classes") or list(build_dataset(data_cfg, "val").classes)
    path = Path(cfg.video).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    views = read_video_views(str(path), data_cfg)  # (V, T, M, 3, H, W) uint8
    with torch.no_grad(), runtime.autocast(device, dtype):
        logits = model(normalize_video(views.to(device)))  # (V, classes)
    probs = logits.float().softmax(-1).mean(0)  # (classes,)
    top = probs.topk(min(int(cfg.topk), len(classes)))
    return [(classes[i], float(p)) for p, i in zip(top.values, top.indices.tolist(), strict=True)]


@hydra.main(version_base="1.3", config_path=runtime.CONFIG_DIR, config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    ranked = predict(cfg)
    width = max(len(name) for name, _ in ranked)
    sys.stdout.write(f"{cfg.video}\n")
    for name, prob in ranked:
        sys.stdout.write(f"  {name:<{width}}  {100 * prob:6.2f}%\n")


def main() -> None:
    runtime.run_hydra(_hydra_main, join_process_group=False)


if __name__ == "__main__":
    main()
