"""Parameter table of a configured model: `python -m tdsclip.summary [experiment=NAME]`.

Builds the model without pretrained weights (nothing is read from disk) and prints trainable
and frozen parameter counts per module.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, open_dict

from tdsclip.engine.cli import reported_errors
from tdsclip.engine.launch import CONFIG_DIR, run_hydra

# torch and the engine load inside the task: a refused command line answers at once.


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="summary")
@reported_errors("tdsclip.summary")
def _hydra_main(cfg: DictConfig) -> None:
    from tdsclip.models import build_model, format_parameter_table

    with open_dict(cfg):
        cfg.model.backbone.pretrained = None  # counts only: no weights needed
    model = build_model(cfg.model)
    sys.stdout.write(f"{cfg.task_name}\n{format_parameter_table(model)}\n")


def main() -> None:
    run_hydra(_hydra_main, config_name="summary", join_process_group=False)


if __name__ == "__main__":
    main()
