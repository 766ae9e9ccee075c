"""Evaluation: `python -m tdsclip.eval checkpoint=PATH [experiment=NAME] [split=test|val]`.

Every view (clips x crops) of a video is classified, softmax scores are averaged per video,
and each video counts exactly once however many processes evaluate. The report (metrics.json,
per-class and confusion CSVs, predictions, unreadable videos) goes to the run directory.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tdsclip.engine.cli import reported_errors
from tdsclip.engine.launch import CONFIG_DIR, run_hydra

# torch and the engine load inside the task: a refused command line answers at once.


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@reported_errors("tdsclip.eval")
def _hydra_main(cfg: DictConfig) -> None:
    from tdsclip.engine import distributed
    from tdsclip.engine.evaluation import evaluate

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    OmegaConf.set_struct(cfg, True)
    evaluate(cfg, run_dir)
    distributed.destroy_process_group()


def main() -> None:
    run_hydra(_hydra_main, config_name="eval")


if __name__ == "__main__":
    main()
