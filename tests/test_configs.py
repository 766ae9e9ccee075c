"""Every config composes, experiments carry the paper's recipe (SPEC section 9), typos fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tdsclip.data import DataConfig
from tdsclip.engine.launch import CONFIG_DIR
from tdsclip.engine.validation import validate_config
from tdsclip.errors import ConfigError
from tdsclip.models import build_model

CONFIGS = Path(CONFIG_DIR)
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))

# SPEC section 9: backbone, T, d, epochs, lr, classes, RandAugment, test clips.
RECIPE = {
    "ssv1_b16_8f": ("ViT-B-16", 8, 320, 40, 1e-3, 174, True, 2),
    "ssv1_b16_16f": ("ViT-B-16", 16, 320, 40, 1e-3, 174, True, 2),
    "ssv1_l14_8f": ("ViT-L-14", 8, 512, 30, 1e-4, 174, True, 2),
    "ssv2_b16_8f": ("ViT-B-16", 8, 320, 30, 1e-3, 174, True, 2),
    "ssv2_b16_16f": ("ViT-B-16", 16, 320, 30, 1e-3, 174, True, 2),
    "ssv2_l14_8f": ("ViT-L-14", 8, 512, 30, 1e-4, 174, True, 2),
    "k400_b16_8f": ("ViT-B-16", 8, 320, 30, 1e-3, 400, False, 4),
    "k400_b16_32f": ("ViT-B-16", 32, 320, 30, 1e-3, 400, False, 4),
    "k400_l14_8f": ("ViT-L-14", 8, 512, 30, 1e-4, 400, False, 4),
}


@pytest.fixture(autouse=True)
def _resolver():
    OmegaConf.register_new_resolver("run_stamp", lambda: "test", replace=True)


def _compose(name: str = "train", overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=overrides or [], return_hydra_config=False)


def test_every_paper_row_has_an_experiment():
    assert set(RECIPE) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_the_paper_recipe(name):
    cfg = _compose(overrides=[f"experiment={name}"])
    OmegaConf.resolve(cfg)
    assert cfg.task_name == name
    backbone, frames, dim, epochs, lr, classes, rand_aug, clips = RECIPE[name]
    assert cfg.model.backbone.name == backbone
    assert cfg.model.backbone.quick_gelu is True
    assert cfg.model.backbone.pretrained.endswith(f"{backbone}.pt")
    assert cfg.data.num_frames == frames and cfg.data.num_local_frames == 5
    assert cfg.model.side.dim == dim
    assert cfg.trainer.epochs == epochs
    assert cfg.optim.lr == pytest.approx(lr)
    assert cfg.model.num_classes == cfg.data.num_classes == classes
    assert cfg.data.input_size == cfg.model.backbone.image_size == 224
    # Common recipe.
    assert list(cfg.optim.betas) == [0.9, 0.999] and cfg.optim.eps == pytest.approx(1e-8)
    assert cfg.optim.weight_decay == pytest.approx(0.15)
    assert cfg.optim.warmup_epochs == 4
    assert cfg.optim.label_smoothing == pytest.approx(0.1)
    assert cfg.data.num_sample == 2
    assert cfg.seed == 1024
    assert cfg.model.side.drop_path_rate == 0.0
    assert cfg.model.side.motion_weight == 0.5 and cfg.model.side.centre_weight == 1.0
    assert cfg.optim.effective_batch == 128 and cfg.data.batch_size == 16
    assert cfg.trainer.precision == "auto"  # bf16 on the GPUs the paper used
    # Augmentation and views.
    ss = name.startswith("ssv")
    assert (cfg.data.rand_augment == "rand-m7-n4-mstd0.5-inc1") is rand_aug
    assert cfg.data.flip == ("swap_lr" if ss else "plain")
    assert cfg.data.grayscale_p == (0.0 if ss else 0.2)
    assert cfg.data.test_clips == clips and cfg.data.test_crops == 3
    assert list(cfg.data.resize) == [256, 320] if ss else cfg.data.resize == 256
    assert cfg.data.format == name.split("_")[0]


@pytest.mark.parametrize("augment_on", ["worker", "device"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_validates_with_either_augment_on(name, augment_on):
    cfg = _compose(overrides=[f"experiment={name}", f"data.augment_on={augment_on}"])
    OmegaConf.resolve(cfg)
    assert DataConfig.from_mapping(cfg.data).augment_on == augment_on


def test_bad_augment_on_names_the_key_and_the_choices():
    cfg = _compose(overrides=["data.augment_on=gpu"])
    message = r"data: augment_on must be one of \('device', 'worker'\), got 'gpu'"
    with pytest.raises(ValueError, match=message):
        DataConfig.from_mapping(cfg.data)
    with pytest.raises(ConfigError, match=r"data\.augment_on: got 'gpu'; it must be one of device"):
        validate_config(cfg)  # what the entry points check first


def test_default_job_config_is_the_tiny_cpu_job():
    cfg = _compose()
    assert cfg.data.format == "synthetic"
    assert cfg.model.backbone.name is None and cfg.model.backbone.pretrained is None
    assert cfg.task_name == "default"


@pytest.mark.parametrize("name", ["eval", "predict", "summary", "visualize"])
def test_entry_point_configs_compose(name):
    video = ["checkpoint=x.pt", "video=v.mp4"]
    overrides = {"eval": ["checkpoint=x.pt"], "predict": video, "visualize": video}
    cfg = _compose(name, [*overrides.get(name, []), "experiment=ssv2_b16_8f"])
    assert cfg.data.format == "ssv2"


def test_misspelt_keys_fail():
    with pytest.raises(ConfigCompositionException):
        _compose(overrides=["trainer.epoch=3"])
    with pytest.raises(ConfigCompositionException):
        _compose(overrides=["model.side.td_kinds=conv"])
    with pytest.raises(ConfigCompositionException):
        _compose(overrides=["experiment=ssv2_b16_8fx"])


def test_l14_summary_builds_from_config():
    cfg = _compose(overrides=["experiment=ssv2_l14_8f", "model.backbone.pretrained=null"])
    assert cfg.model.backbone.image_size == 224


def test_tiny_model_builds_from_config():
    cfg = _compose()
    model = build_model(cfg.model)
    assert model.backbone.image_size == cfg.data.input_size
    assert model.side.stem.num_local_frames == cfg.data.num_local_frames


ABLATIONS = [
    ["model.side.td_layers=none", "model.side.sme=false", "data.num_local_frames=1"],
    ["model.side.sme=false", "data.num_local_frames=1"],
    ["data.num_local_frames=3"],
    ["model.side.motion_weight=1.0"],
    ["model.side.td_kind=conv"],
    ["model.side.td_kind=direct"],
    ["model.side.td_kernel=7"],
    ["model.side.dim=128"],
    ["model.side.td_layers=[0,1,2,3,4,5]"],
    ["model.side.td_layers=[6,7,8,9,10,11]"],
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: " ".join(o))
def test_ablation_overrides_compose(overrides):
    cfg = _compose(overrides=["experiment=ssv1_b16_8f", *overrides])
    OmegaConf.resolve(cfg)
    assert cfg.model.num_local_frames == cfg.data.num_local_frames


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm_8gpu", "experiment=ssv2_b16_8f"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert launcher.max_num_timeout > 0
