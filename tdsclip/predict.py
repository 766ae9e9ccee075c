"""Classify one video: `python -m tdsclip.predict checkpoint=PATH video=PATH [topk=5]`.

Prints the top-k class names with probabilities (softmax averaged over the test views of
the data config: clips x crops). Class names come from a training checkpoint, else from the
data config's label file.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tdsclip.engine.cli import reported_errors
from tdsclip.engine.launch import CONFIG_DIR, run_hydra

# torch and the engine load inside the task: a refused command line answers at once.


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@reported_errors("tdsclip.predict")
def _hydra_main(cfg: DictConfig) -> None:
    from tdsclip.engine.prediction import predict

    ranked = predict(cfg)
    width = max(len(name) for name, _ in ranked)
    sys.stdout.write(f"{cfg.video}\n")
    for name, prob in ranked:
        sys.stdout.write(f"  {name:<{width}}  {100 * prob:6.2f}%\n")


def main() -> None:
    run_hydra(_hydra_main, config_name="predict", join_process_group=False)


if __name__ == "__main__":
    main()
