"""The image tower's init and pooling recipe fields (`--image-init`, `--image-pool`): what each value
builds, checked against open_clip's own modules and the init formulas, and what each does to the hash."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import VisionTransformer

import towers
from launch.config import Recipe, parse_experiment
from launch.data import data_identity
from towers.mixer import MixerImageTower
from towers.transformer import TransformerImageTower

W96 = dict(image_size=64, patch_size=8, width=96, layers=4)


def recipe_hash(argv: list[str]) -> str:
    recipe = parse_experiment(argv)[0].recipe.with_precision("cpu")[0]
    return recipe.sha256(1, data_identity(None))


def test_the_defaults_leave_the_hash_alone_and_every_other_value_moves_it():
    base = recipe_hash([])
    assert recipe_hash(["--image-init", "library", "--image-pool", "library"]) == base
    moved = {recipe_hash(["--image-init", "original"]), recipe_hash(["--image-pool", "avg"]),
             recipe_hash(["--image-pool", "map"])}
    assert len(moved) == 3 and base not in moved
    identity = Recipe(image_pool="avg", precision="fp32").identity(1, data_identity(None))
    assert identity["image_pool"] == "avg" and "image_init" not in identity
    assert identity["train_data"] == {"toy_seed": 0, "toy_version": data_identity(None)["toy_version"]}


def test_the_toy_seed_and_task_are_hashed_inside_the_data_identity():
    identity = Recipe(toy_seed=3, toy_task="hard", precision="fp32").identity(1, data_identity(None))
    assert identity["train_data"]["toy_seed"] == 3 and identity["train_data"]["toy_task"] == "hard"
    assert "toy_seed" not in identity and "toy_task" not in identity


@pytest.mark.parametrize("argv", [["--image-pool", "tok"], ["--image-init", "xavier"]])
def test_an_unknown_value_is_refused_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_experiment(argv)
    assert exit_.value.code == 2 and argv[0] in capsys.readouterr().err


def test_the_vit_average_pool_is_open_clips_own():
    torch.manual_seed(0)
    ours = TransformerImageTower(**W96, heads=3, pool="avg").eval()
    reference = VisionTransformer(**W96, heads=3, mlp_ratio=4.0, output_dim=96, pool_type="avg").eval()
    reference.proj = None
    reference.load_state_dict(ours.state_dict())
    images = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(ours(images), reference(images), rtol=0, atol=0)
    # and it is not the class token the library default reads
    library = TransformerImageTower(**W96, heads=3).eval()
    library.load_state_dict(ours.state_dict())
    assert (library(images) - ours(images)).abs().max() > 1e-3


@pytest.mark.parametrize("tower", [lambda **k: TransformerImageTower(**W96, heads=3, **k),
                                   lambda **k: MixerImageTower(**W96, mlp_ratio=(2.0, 4.0), **k)],
                         ids=["vit", "mixer"])
def test_attention_pooling_adds_one_query_and_its_attention(tower):
    library, pooled = tower(), tower(pool="map")
    extra = sum(p.numel() for p in pooled.parameters()) - sum(p.numel() for p in library.parameters())
    # query (96) + q/k/v in-projection (3 x 96 x 96 + 3 x 96) + out-projection (96 x 96 + 96) + 2 LayerNorms
    assert extra == 96 + 3 * 96 * 96 + 3 * 96 + 96 * 96 + 96 + 2 * 2 * 96
    assert pooled(torch.randn(2, 3, 64, 64)).shape == (2, 96)


def test_the_vits_original_init_is_clips_normal_init():
    torch.manual_seed(0)
    tower = TransformerImageTower(image_size=64, patch_size=8, width=256, layers=8, heads=8, init="original")
    width, layers = 256, 8
    block = tower.transformer.resblocks[3]
    residual = width ** -0.5 * (2 * layers) ** -0.5
    expected = {"attn.in_proj_weight": width ** -0.5, "attn.out_proj.weight": residual,
                "mlp.c_fc.weight": (2 * width) ** -0.5, "mlp.c_proj.weight": residual}
    for name, std in expected.items():
        assert block.get_parameter(name).std().item() == pytest.approx(std, rel=0.03), name
    # the library's (PyTorch's) c_proj is uniform with bound fan_in^-0.5: std (3 fan_in)^-0.5, 2.3x larger
    library = TransformerImageTower(image_size=64, patch_size=8, width=256, layers=8, heads=8)
    assert library.transformer.resblocks[3].mlp.c_proj.weight.std().item() == pytest.approx(
        (3 * 4 * width) ** -0.5, rel=0.03)


def test_the_mixers_original_init_is_flax_lecun_normal_with_zero_biases():
    torch.manual_seed(0)
    tower = MixerImageTower(image_size=64, patch_size=8, width=256, layers=2, mlp_ratio=(2.0, 4.0),
                            init="original")
    fc1 = tower.blocks[0].mlp_channels.fc1
    assert fc1.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.03)
    assert fc1.bias.abs().max().item() == 0
    library = MixerImageTower(image_size=64, patch_size=8, width=256, layers=2, mlp_ratio=(2.0, 4.0))
    # timm's Xavier-uniform: std sqrt(2 / (fan_in + fan_out)), and MLP biases N(0, 1e-6)
    assert library.blocks[0].mlp_channels.fc1.weight.std().item() == pytest.approx(
        (2 / (256 + 1024)) ** 0.5, rel=0.03)
    assert 0 < library.blocks[0].mlp_channels.fc1.bias.abs().max().item() < 1e-5


def test_a_runs_model_config_rebuilds_its_pooling():
    experiment = parse_experiment(["--tower", "mixer", "--image-pool", "map", "--image-init", "original"])[0]
    model = towers.build_model(**experiment.model_kwargs())
    assert model.model_config["image_overrides"] == {"init": "original", "pool": "map"}
    rebuilt = towers.clip.build_from_config(model.model_config)
    rebuilt.load_state_dict(model.state_dict())  # strict: the pooler's parameters are there


@pytest.mark.parametrize(("field", "value"), [("image_pool", "tok"), ("toy_task", "easy"),
                                              ("loader_start_method", "thread")])
def test_a_config_file_value_outside_the_vocabulary_is_refused_in_one_line(field, value, tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text(f"{field}: {value}\n")
    with pytest.raises(SystemExit) as exit_:
        parse_experiment(["--config", str(config)])
    err = capsys.readouterr().err
    flag = "--" + field.replace("_", "-")
    assert exit_.value.code == 2 and err.count("\n") == 1 and f"{flag} must be one of" in err
