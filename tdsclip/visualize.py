"""What a model looks at: `python -m tdsclip.visualize checkpoint=PATH video=PATH [out=PNG]`.

Writes one PNG: the frames of one view of the video (segment centres, centre crop), the
SME-Adapter's motion branch and the TD-Adapters' gate as heat maps over them, and the top-k
classes of that view. Prints the PNG's path.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tdsclip.engine.cli import reported_errors
from tdsclip.engine.launch import CONFIG_DIR, run_hydra

# torch and the engine load inside the task: a refused command line answers at once.


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="visualize")
@reported_errors("tdsclip.visualize")
def _hydra_main(cfg: DictConfig) -> None:
    from tdsclip.engine.visualization import visualize

    out = visualize(cfg)
    sys.stdout.write(f"{out}\n")


def main() -> None:
    run_hydra(_hydra_main, config_name="visualize", join_process_group=False)


if __name__ == "__main__":
    main()
