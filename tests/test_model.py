"""TDS-CLIP model: exactness to the authors' code, ablation variants, freezing, precision."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import TINY_BACKBONE, tiny_model, tiny_video

from tdsclip.convert import from_reference
from tdsclip.engine.checkpoint import load_model_file
from tdsclip.models import (
    count_parameters,
    create_backbone,
    create_tdsclip,
    format_parameter_table,
    parameter_summary,
)
from tdsclip.models.reference import convert_state, infer_architecture
from tdsclip.models.td_adapter import TDAdapter, temporal_max_pool
from tdsclip.models.tds_block import shift_class_token


def _arch_kwargs(config: dict) -> dict:
    keys = ("image_size", "patch_size", "width", "layers", "heads", "side_dim", "T", "num_diff")
    return {k: config[k] for k in (*keys, "num_classes")}


# ---------------------------------------------------------------------------- reference
def test_reference_logits_reproduced(reference):
    model = from_reference(reference["checkpoint"], **_arch_kwargs(reference["config"]))
    assert not model.training
    with torch.no_grad():
        logits = model(reference["video"])
    assert logits.shape == reference["logits"].shape
    torch.testing.assert_close(logits, reference["logits"], atol=1e-4, rtol=0)
    trainable, _ = count_parameters(model)
    assert trainable == reference["trainable_params"]


def test_reference_without_prefix_and_from_path(reference, tmp_path):
    state = reference["checkpoint"]["model_state_dict"]
    bare = {k.removeprefix("module."): v for k, v in state.items()}
    model = from_reference(bare)  # architecture read off the weights
    path = tmp_path / "ref.pt"
    torch.save(reference["checkpoint"], path)
    model_from_path = from_reference(path)
    with torch.no_grad():
        a, b = model(reference["video"]), model_from_path(reference["video"])
    torch.testing.assert_close(a, reference["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_reference_keys_mismatch_is_an_error_listing_them(reference):
    state = dict(reference["checkpoint"]["model_state_dict"])
    state["module.visual.side_extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="side_extra"):
        from_reference(state)
    state = dict(reference["checkpoint"]["model_state_dict"])
    del state["module.visual.transformer.side_transformer.1.mse.bn2.running_var"]
    with pytest.raises(KeyError, match=r"blocks\.1\.td\.expand_norm\.running_var"):
        from_reference(state)


def test_reference_wrong_architecture_keyword(reference):
    with pytest.raises(ValueError, match="side_dim"):
        from_reference(reference["checkpoint"], side_dim=320)


def test_infer_architecture(reference):
    arch = infer_architecture(reference["checkpoint"]["model_state_dict"])
    cfg = reference["config"]
    for key in ("image_size", "patch_size", "width", "layers", "heads", "side_dim", "num_diff"):
        assert arch[key] == cfg[key], key
    assert arch["td_layers"] == [0, 1, 2]
    converted = convert_state(reference["checkpoint"]["model_state_dict"])
    assert converted["side.blocks.0.temporal.dw.weight"].shape == (cfg["side_dim"], 3)


def test_convert_cli_writes_a_loadable_model_file(reference, tmp_path):
    src, dst = tmp_path / "authors.pt", tmp_path / "ours.pt"
    torch.save(reference["checkpoint"], src)
    run = subprocess.run(
        [sys.executable, "-m", "tdsclip.convert", str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "2,231,095" in run.stderr  # the parameter table is logged
    model = load_model_file(dst)
    with torch.no_grad():
        torch.testing.assert_close(
            model(reference["video"]), reference["logits"], atol=1e-4, rtol=0
        )


# ---------------------------------------------------------------------------- sizes
def test_paper_parameter_count_b16():
    model = create_tdsclip(num_classes=174, backbone=create_backbone(name="ViT-B-16"), side_dim=320)
    trainable, frozen = count_parameters(model)
    assert trainable == 24_224_526
    assert frozen == 85_797_888
    rows = {r.name: r for r in parameter_summary(model)}
    assert rows["side.head"].trainable == 320 * 2 + 55_854  # BN + fc
    assert (
        sum(r.trainable for r in parameter_summary(model)[:-1] if not r.name.startswith(" "))
        == trainable
    )
    assert "24,224,526" in format_parameter_table(model)


@pytest.mark.slow
def test_l14_builds():
    model = create_tdsclip(num_classes=174, backbone=create_backbone(name="ViT-L-14"), side_dim=512)
    assert model.backbone.grid_size == 16 and model.side.dim == 512
    assert count_parameters(model)[0] == 106_535_598


# ---------------------------------------------------------------------------- variants
VARIANTS = {
    "default": {},
    "baseline_no_td_no_sme": {"td_layers": [], "sme": False, "num_local_frames": 1},
    "td_only": {"sme": False, "num_local_frames": 1},
    "td_first_half": {"td_layers": [0]},
    "td_second_half": {"td_layers": [1, 2]},
    "local_frames_3": {"num_local_frames": 3},
    "sme_off_m5": {"sme": False},
    "fusion_1": {"motion_weight": 1.0},
    "fusion_1.5": {"motion_weight": 1.5},
    "td_conv": {"td_kind": "conv"},
    "td_direct": {"td_kind": "direct"},
    "pool_kernel_5": {"td_kernel": 5},
    "pool_kernel_7": {"td_kernel": 7},
    "width_64": {"side_dim": 64, "side_heads": 1},
    "reduction_8": {"td_reduction": 8},
    "drop_path": {"drop_path_rate": 0.2},
    "head_dropout": {"head_dropout": 0.5},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_forward_backward(name):
    kwargs = dict(VARIANTS[name])
    model = tiny_model(**kwargs).train()
    video = tiny_video(local=kwargs.get("num_local_frames", 5))
    logits = model(video)
    assert logits.shape == (2, 5)
    logits.logsumexp(-1).sum().backward()
    for pname, p in model.side.named_parameters():
        assert p.requires_grad, pname
        assert p.grad is not None, f"no gradient for {pname}"
        # With drop path a whole branch may be dropped for both clips of this tiny batch.
        assert name == "drop_path" or p.grad.abs().sum() > 0, f"zero gradient for {pname}"
    for pname, p in model.backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, pname
    n_td = sum(b.td is not None for b in model.side.blocks)
    expected_td = len(kwargs.get("td_layers", [0, 1, 2]))
    assert n_td == expected_td
    assert (model.side.stem.motion_conv is not None) == kwargs.get("sme", True)


def test_variants_compute_different_functions():
    video = tiny_video()
    outs = {}
    for name in ("default", "td_conv", "td_direct", "pool_kernel_5", "fusion_1"):
        with torch.no_grad():
            outs[name] = tiny_model(**VARIANTS[name]).eval()(video)
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_bad_switch_values():
    with pytest.raises(ValueError, match="td kind"):
        tiny_model(td_kind="avgpool")
    with pytest.raises(ValueError, match="odd"):
        tiny_model(td_kernel=4)
    with pytest.raises(ValueError, match="local frames"):
        tiny_model(num_local_frames=1)  # SME on needs M >= 3
    with pytest.raises(ValueError, match="td_layers"):
        tiny_model(td_layers=[3])
    model = tiny_model()
    with pytest.raises(ValueError, match="local frames"):
        model(tiny_video(local=3))
    with pytest.raises(ValueError, match="grid"):
        model(tiny_video(size=48))


def test_number_of_frames_comes_from_the_input():
    model = tiny_model().eval()
    with torch.no_grad():
        assert model(tiny_video(frames=2)).shape == (2, 5)
        assert model(tiny_video(frames=6)).shape == (2, 5)


# ---------------------------------------------------------------------------- freezing
def test_backbone_outputs_identical_with_and_without_side_network():
    model = tiny_model().train()
    video = tiny_video()
    centre = video[:, :, 2].flatten(0, 1)
    alone = model.backbone(centre.clone())
    captured = []
    hooks = [
        blk.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().clone()))
        for blk in model.backbone.transformer.resblocks
    ]
    model(video).sum().backward()
    for h in hooks:
        h.remove()
    assert len(captured) == len(alone) == TINY_BACKBONE["layers"]
    for a, b in zip(alone, captured, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_backbone_stays_in_eval_mode_and_frozen():
    model = tiny_model()
    model.train()
    assert model.side.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    model.backbone.train()
    assert not model.backbone.training
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_backbone_builds_no_graph_and_saves_no_tensors():
    model = tiny_model()
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = list(model.backbone.iter_layers(images))
    assert saved == []
    assert all(o.grad_fn is None and not o.requires_grad for o in outs)
    assert torch.is_grad_enabled()  # the generator did not leak no_grad into the caller


def test_backbone_dims_from_open_clip_names():
    b16 = create_backbone(name="ViT-B-16")
    assert (b16.width, b16.num_layers, b16.patch_size, b16.grid_size) == (768, 12, 16, 14)
    blk = b16.transformer.resblocks[0]
    assert type(blk.mlp.gelu).__name__ == "QuickGELU"
    with pytest.raises(ValueError, match="unknown open_clip model"):
        create_backbone(name="ViT-Q-99")


# ---------------------------------------------------------------------------- precision
def test_bf16_autocast_forward_on_cpu():
    model = tiny_model().eval()
    video = tiny_video()
    with torch.no_grad():
        ref = model(video)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(video)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


def test_bf16_backbone_weights_training_step():
    model = tiny_model().train()
    model.backbone.cast_weights(torch.bfloat16)
    assert model.backbone.conv1.weight.dtype == torch.bfloat16
    assert model.backbone.ln_pre.weight.dtype == torch.float32  # LayerNorms stay fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(tiny_video()).float().logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.side.parameters())


def test_bf16_training_saves_no_fp32_activations():
    """Under bf16 autocast every activation kept for backward is bf16: an fp32 one (e.g. a
    sum promoted by an fp32 parameter) would double its bytes. Parameters and per-channel
    statistics are exempt."""
    model = tiny_model().train()
    model.backbone.cast_weights(torch.bfloat16)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    widest = max(p.shape[-1] for p in model.side.parameters())
    fp32 = []

    def pack(t):
        is_param = t.untyped_storage().data_ptr() in params
        if t.dtype == torch.float32 and not is_param and t.numel() > widest:
            fp32.append(tuple(t.shape))
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        loss = model(tiny_video()).float().logsumexp(-1).mean()
    loss.backward()
    assert fp32 == []


# ---------------------------------------------------------------------------- ops
def test_class_token_shift():
    cls = torch.arange(2 * 3 * 4, dtype=torch.float32).view(6, 1, 4)  # B=2, T=3, d=4
    out = shift_class_token(cls, 3).view(2, 3, 4)
    c = cls.view(2, 3, 4)
    torch.testing.assert_close(out[:, :2, :2], c[:, 1:, :2])  # first half from the next frame
    assert (out[:, 2, :2] == 0).all()
    torch.testing.assert_close(out[:, 1:, 2:], c[:, :2, 2:])  # second half from the previous
    assert (out[:, 0, 2:] == 0).all()


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_temporal_max_pool_matches_maxpool3d(kernel):
    x = torch.randn(2, 6, 5, 3)  # (B, T, N, c)
    ref = torch.nn.MaxPool3d((kernel, 1, 1), stride=1, padding=(kernel // 2, 0, 0))
    expected = ref(x.permute(0, 3, 1, 2).unsqueeze(-1)).squeeze(-1).permute(0, 2, 3, 1)
    torch.testing.assert_close(temporal_max_pool(x, kernel), expected)
    grad = torch.randn_like(x)
    leaf = x.clone().requires_grad_()
    temporal_max_pool(leaf, kernel).backward(grad)
    ref_leaf = x.clone().requires_grad_()
    ref(ref_leaf.permute(0, 3, 1, 2).unsqueeze(-1)).squeeze(-1).permute(0, 2, 3, 1).backward(grad)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)


def test_td_adapter_matches_its_formula():
    """The channel mix folded into the expand weight computes the written formula."""
    torch.manual_seed(0)
    td = TDAdapter(32, reduction=4).train()
    z = torch.randn(2, 4, 6, 32, requires_grad=True)  # (B, T, N, d)
    out = td(z)
    grad = torch.randn_like(out)
    out.backward(grad)
    got = [z.grad, *(p.grad for p in td.parameters())]
    td.zero_grad()
    z2 = z.detach().clone().requires_grad_()
    b = td.reduce_norm(td.reduce(z2))
    diff = b - temporal_max_pool(b, 3)
    u = 0.5 * diff + 0.5 * diff.mean(dim=-1, keepdim=True)
    y = td.expand_norm(td.expand(u))
    expected = z2 + z2 * (torch.sigmoid(y) - 0.5)
    expected.backward(grad)
    torch.testing.assert_close(out, expected)
    for a, e in zip(got, [z2.grad, *(p.grad for p in td.parameters())], strict=True):
        torch.testing.assert_close(a, e)


def test_random_tower_is_reproducible_from_the_config():
    torch.manual_seed(123)
    a = create_backbone(name=None, **TINY_BACKBONE)
    torch.manual_seed(456)
    b = create_backbone(name=None, **TINY_BACKBONE)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=key)
    state = torch.get_rng_state()
    create_backbone(name=None, **TINY_BACKBONE)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone
