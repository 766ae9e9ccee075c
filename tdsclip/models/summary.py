"""Parameter counts per module: what a run trains and what stays frozen."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tdsclip.models.tdsclip import TDSCLIP


@dataclass(frozen=True)
class ParamRow:
    name: str
    trainable: int
    frozen: int


def _count(params) -> tuple[int, int]:
    trainable = frozen = 0
    for p in params:
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def parameter_summary(model: TDSCLIP) -> list[ParamRow]:
    """Rows for the backbone, each part of the side network, TD-Adapters, and the total."""
    side = model.side
    parts: list[tuple[str, list[nn.Parameter]]] = [
        ("backbone (frozen CLIP)", list(model.backbone.parameters())),
        ("side.stem (SME-Adapter)", list(side.stem.parameters())),
        ("side.proj (LN + Linear per layer)", list(side.proj.parameters())),
        ("side.pos_embed", [side.pos_embed]),
        ("side.blocks (TDS blocks)", list(side.blocks.parameters())),
        (
            "  of which TD-Adapters",
            [p for b in side.blocks if b.td is not None for p in b.td.parameters()],
        ),
        ("side.head", list(side.head.parameters())),
    ]
    rows = [ParamRow(name, *_count(params)) for name, params in parts]
    rows.append(ParamRow("total", *_count(model.parameters())))
    return rows


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    return _count(model.parameters())


def format_parameter_table(model: TDSCLIP) -> str:
    rows = parameter_summary(model)
    width = max(len(r.name) for r in rows)
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'frozen':>12}"]
    lines += [f"{r.name:<{width}}  {r.trainable:>12,}  {r.frozen:>12,}" for r in rows]
    return "\n".join(lines)
