"""Convert the authors' TDS-CLIP checkpoints (BBYL9413/TDS-CLIP layout) into tdsclip models.

Python::

    from tdsclip.convert import from_reference
    model = from_reference("sthv2_b16_8f.pt")            # architecture read off the weights
    model = from_reference(ckpt, image_size=224, T=8)    # keywords are checked against them

Command line::

    python -m tdsclip.convert SRC.pt DST.pt

``DST`` is a tdsclip model file (``tdsclip.engine.checkpoint.load_model_file`` reads it): the side
network, the frozen tower it was trained with, and the architecture.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tdsclip.models.reference import (
    _reference_state,
    convert_state,
    from_reference,
    infer_architecture,
    load_converted,
    model_from_arch,
    reference_model_config,
)

__all__ = [
    "convert_state",
    "from_reference",
    "infer_architecture",
    "load_converted",
    "main",
    "model_from_arch",
    "reference_model_config",
]

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="authors' checkpoint (.pt)")
    parser.add_argument("dst", type=Path, help="tdsclip model file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from tdsclip.engine.checkpoint import save_model_file
    from tdsclip.engine.cli import exit_on_error
    from tdsclip.models.summary import format_parameter_table

    with exit_on_error("tdsclip.convert"):
        state = _reference_state(args.src)
        arch = infer_architecture(state)
        model = model_from_arch(arch)
        load_converted(model, convert_state(state))
        save_model_file(
            args.dst, model, model_config=reference_model_config(arch), source=str(args.src)
        )
    log.info("architecture: %s", arch)
    log.info("\n%s", format_parameter_table(model))
    log.info("wrote %s", args.dst)


if __name__ == "__main__":
    main()
