"""TDS-CLIP model: frozen CLIP tower, side network, factory and converter helpers."""

from tdsclip.models.backbone import FrozenCLIPViT
from tdsclip.models.factory import build_backbone, build_model, create_backbone, create_tdsclip
from tdsclip.models.side import SideNetwork
from tdsclip.models.sme_adapter import SMEStem
from tdsclip.models.summary import count_parameters, format_parameter_table, parameter_summary
from tdsclip.models.td_adapter import TDAdapter
from tdsclip.models.tds_block import TDSBlock
from tdsclip.models.tdsclip import TDSCLIP

__all__ = [
    "TDSCLIP",
    "FrozenCLIPViT",
    "SMEStem",
    "SideNetwork",
    "TDAdapter",
    "TDSBlock",
    "build_backbone",
    "build_model",
    "count_parameters",
    "create_backbone",
    "create_tdsclip",
    "format_parameter_table",
    "parameter_summary",
]
