"""The cnn family: a timm ResNet image tower sized to the toy's towers, the Transformer family's text tower,
init/pool options, BatchNorm in train and eval mode, and its statistics through checkpoints, export and
a 2-step training run."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

import towers
from launch import train
from launch.config import parse_experiment
from towers import cnn, export, transformer
from towers.cnn import ResNetImageTower


def _image_params(family: str, variant: str) -> int:
    with torch.device("meta"):
        tower = towers.build_tower(family, "image", variant)
    return sum(p.numel() for p in tower.parameters())


def _with_statistics(model: towers.CLIP, steps: int = 3) -> towers.CLIP:
    """A few train-mode forwards, so every BatchNorm holds running statistics of its own."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model.encode_image(torch.rand(8, 3, model.image_size, model.image_size) * 2 + 0.5)
    return model.eval()


def _batch_norms(module: torch.nn.Module) -> dict[str, torch.nn.BatchNorm2d]:
    return {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def test_w96_image_tower_is_within_15_percent_of_the_vit_and_mixer_mean():
    vit, mixer = _image_params("transformer", "w96"), _image_params("mixer", "w96")
    assert (vit, mixer) == (472_512, 416_416)
    ours = _image_params("cnn", "w96")
    assert ours == 395_214  # resnet18's blocks at channels 12-24-48-96, deep stem of 6-6-12
    assert abs(ours / ((vit + mixer) / 2) - 1) < 0.15  # -11.1%
    # the ladder grows as the others do: within 20% of their mean at every width (w64 -18%, w256 -1%)
    for width in (64, 96, 128, 192, 256):
        mean = (_image_params("transformer", f"w{width}") + _image_params("mixer", f"w{width}")) / 2
        assert abs(_image_params("cnn", f"w{width}") / mean - 1) < 0.2, width
    assert "tiny" not in cnn.VARIANTS and towers.build_tower("cnn", "image", "tiny").width == 128  # the alias


def test_64_px_rows_end_on_a_4x4_map_and_pool_to_their_width():
    torch.manual_seed(0)
    tower = towers.build_tower("cnn", "image", "w96")
    images = torch.randn(3, 3, 64, 64)
    assert tower.forward_features(images).shape == (3, 96, 4, 4)  # /16: the stem keeps no max-pool
    out = tower(images)
    assert out.shape == (3, tower.width) == (3, 96) and tower.image_size == (64, 64)
    torch.testing.assert_close(out, tower.forward_features(images).mean(dim=(2, 3)))  # timm's avg pool


@pytest.mark.parametrize("variant, timm_name, width", [
    ("S/32", "resnet18", 512), ("B/32", "resnet34", 512), ("B/16", "resnet50", 2048)])
def test_224_px_rows_are_timms_resnets(variant, timm_name, width):
    with torch.device("meta"):
        ours = towers.build_tower("cnn", "image", variant)
        reference = timm.create_model(timm_name, num_classes=0, pretrained=False)
        features = ours(torch.zeros(2, 3, 224, 224))
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    assert features.shape == (2, width) and ours.width == width and ours.image_size == (224, 224)


def test_b32_is_built_and_counted_on_meta():
    row = towers.profile("cnn-B-32")
    assert row["image_params"] == 21_284_672 + 512 * 512  # resnet34 + its projection
    assert row["text_params"] == towers.profile("transformer-B-32")["text_params"]
    assert row["total_params"] == 84_974_913
    assert row["image_gflops"] == pytest.approx(2 * 3.66, rel=0.01)  # timm's resnet34: 3.66 GMACs


def test_text_tower_is_the_transformer_familys():
    for variant, row in cnn.VARIANTS.items():
        assert row["text"] is transformer.VARIANTS[variant]["text"]
        assert row["embed_dim"] == transformer.VARIANTS[variant]["embed_dim"]
    torch.manual_seed(0)
    ours = towers.build_tower("cnn", "text", "w96", **towers.registry.text_mask_overrides("cnn", "caption"))
    torch.manual_seed(0)
    theirs = towers.build_tower("transformer", "text", "w96", text_mask="caption")
    assert type(ours) is type(theirs) and ours.text_mask == "caption"
    tokens = towers.tokenize(["a red circle", "two blue squares"])
    assert torch.equal(ours(tokens), theirs(tokens))


def _conv_std(tower: ResNetImageTower) -> float:
    return tower.layer3[1].conv1.weight.std().item()


def test_library_and_original_init():
    torch.manual_seed(0)
    library = ResNetImageTower(**cnn.VARIANTS["w256"]["image"])
    original = ResNetImageTower(**cnn.VARIANTS["w256"]["image"], init="original")
    fan = 9 * 128  # layer3: 128 channels in and out, 3x3
    assert _conv_std(library) == pytest.approx(math.sqrt(2 / fan), rel=0.03)  # Kaiming normal, fan-out
    assert _conv_std(original) == pytest.approx(1 / math.sqrt(3 * fan), rel=0.03)  # PyTorch's default
    for tower in (library, original):  # both zero the last BatchNorm of every residual branch
        assert all(not block.bn2.weight.any() for stage in (tower.layer1, tower.layer4) for block in stage)
        assert tower.layer1[0].bn1.weight.eq(1).all()
    torch.manual_seed(1)
    pooled = ResNetImageTower(**cnn.VARIANTS["w96"]["image"], init="original", pool="map")
    assert pooled.attn_pool.attn.in_proj_weight.std().item() == pytest.approx(96 ** -0.5, rel=0.05)


def test_pools():
    torch.manual_seed(0)
    library = ResNetImageTower(**cnn.VARIANTS["w96"]["image"])
    torch.manual_seed(0)
    avg = ResNetImageTower(**cnn.VARIANTS["w96"]["image"], pool="avg")
    torch.manual_seed(0)
    attention = ResNetImageTower(**cnn.VARIANTS["w96"]["image"], pool="map")
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(library(images), avg(images))
    assert library.state_dict().keys() == avg.state_dict().keys()
    assert attention(images).shape == (2, 96)
    assert not torch.allclose(attention(images), library(images))
    # the recipe fields reach the tower through model_kwargs, as for the other families
    kwargs = towers.registry.model_kwargs("cnn", "cnn", "w96", None, text_mask="causal",
                                          image_init="original", image_pool="map")
    assert towers.build_model(**kwargs).visual.attn_pool is not None


@pytest.mark.parametrize("override", [{"init": "xavier"}, {"pool": "max"}, {"block": "dense"}])
def test_bad_init_pool_or_block_is_one_value_error(override):
    with pytest.raises(ValueError, match=r"cnn image tower init .*: expected one of \['library', 'orig"):
        towers.build_tower("cnn", "image", "w64", **override)


def test_eval_mode_uses_running_statistics_and_train_mode_the_batchs():
    torch.manual_seed(0)
    model = _with_statistics(towers.create_model("cnn-w64"))
    images = torch.rand(4, 3, 64, 64)
    stem = model.visual.bn1
    before = (stem.running_mean.clone(), stem.num_batches_tracked.item())
    with torch.no_grad():
        alone = model.encode_image(images[:1])
        in_batch = model.encode_image(images)[:1]
        # the stem's BatchNorm by hand from its running statistics (an independent reference)
        x = model.visual.conv1(images)
        mean, var, scale, shift = (v[:, None, None] for v in (stem.running_mean, stem.running_var,
                                                                stem.weight, stem.bias))
        expected = (x - mean) / torch.sqrt(var + stem.eps) * scale + shift
        torch.testing.assert_close(stem(x), expected)
    torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-6)  # independent of the batch
    assert torch.equal(stem.running_mean, before[0]) and stem.num_batches_tracked.item() == before[1]
    model.train()
    with torch.no_grad():
        alone = model.encode_image(images[:1].repeat(2, 1, 1, 1))[:1]  # a batch of that image only
        in_batch = model.encode_image(images)[:1]
    assert not torch.allclose(alone, in_batch, atol=1e-3)  # train mode: the batch's statistics
    assert stem.num_batches_tracked.item() == before[1] + 2


def test_finite_batch_norm_trains_as_torchs_batch_norm():
    torch.manual_seed(0)
    ours, reference = cnn.FiniteBatchNorm2d(6), torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-1, 1)
    reference.load_state_dict(ours.state_dict())
    for seed in range(3):
        x = torch.randn(5, 6, 4, 4, generator=torch.Generator().manual_seed(seed)) * 3 + 1
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ours, out_ref = ours(x_ours), reference(x_ref)
        (out_ours * torch.arange(16.0).reshape(4, 4)).sum().backward()
        (out_ref * torch.arange(16.0).reshape(4, 4)).sum().backward()
        assert torch.equal(out_ours, out_ref) and torch.equal(x_ours.grad, x_ref.grad)
        theirs = reference.state_dict()
        assert all(torch.equal(value, theirs[key]) for key, value in ours.state_dict().items())
    assert torch.equal(ours.weight.grad, reference.weight.grad) and ours.num_batches_tracked.item() == 3
    ours.eval(), reference.eval()
    assert torch.equal(ours(x), reference(x))


def test_a_non_finite_batch_leaves_the_running_statistics_as_they_were():
    torch.manual_seed(0)
    tower = towers.build_tower("cnn", "image", "w64").train()
    bad = torch.rand(4, 3, 64, 64)
    bad[1, :, 5, 5] = math.nan
    plain = torch.nn.BatchNorm2d(3).train()
    plain(bad)
    assert plain.running_mean.isnan().all()  # what a plain BatchNorm keeps after such a step
    with torch.no_grad():
        tower(torch.rand(4, 3, 64, 64))
        before = {name: (m.running_mean.clone(), m.running_var.clone())
                  for name, m in _batch_norms(tower).items()}
        tower(bad)
        for name, norm in _batch_norms(tower).items():
            assert torch.equal(norm.running_mean, before[name][0]) and torch.equal(norm.running_var,
                                                                                   before[name][1]), name
        tower(torch.rand(4, 3, 64, 64))  # a finite batch moves them again
    assert not torch.equal(tower.bn1.running_mean, before["bn1"][0])
    assert all(torch.isfinite(m.running_var).all() for m in _batch_norms(tower).values())


def _assert_same_statistics(first: towers.CLIP, second: towers.CLIP) -> None:
    norms = _batch_norms(first.visual)
    assert norms and norms.keys() == _batch_norms(second.visual).keys()
    for name, norm in norms.items():
        other = _batch_norms(second.visual)[name]
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(norm, buffer), getattr(other, buffer)), (name, buffer)
    assert not norms["bn1"].running_var.eq(1).all()  # moved from the init, or the check would be vacuous


def test_checkpoint_and_export_round_trip_the_batch_norm_statistics(tmp_path, capsys):
    torch.manual_seed(0)
    model = _with_statistics(towers.create_model("cnn-w64"))
    run = tmp_path / "cnn-seed0"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict(), "step": 3},
               run / "checkpoints" / "step_00000003.pt")
    (run / "checkpoints" / "latest").write_text("step_00000003.pt\n")
    images, tokens = torch.rand(2, 3, 64, 64), towers.tokenize(["a red circle", "blue"])
    loaded, _ = towers.load(run)
    assert not loaded.training and not loaded.visual.bn1.training
    assert export.main([str(run), "--to", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "open_clip cannot hold the cnn image tower" in err
    exported, _ = towers.load(tmp_path / "out")
    # the cnn family's text tower is open_clip's text Transformer: with a ViT image tower it exports
    assert export.open_clip_refusal(towers.create_model("transformer+cnn-tiny").model_config) is None
    for back in (loaded, exported):
        _assert_same_statistics(model, back)
        with torch.no_grad():
            assert torch.equal(back.encode_image(images), model.encode_image(images))
            assert torch.equal(back.encode_text(tokens), model.encode_text(tokens))


@pytest.mark.slow  # 2 steps + an eval in this process: 38-85 s on the busy 2-core EPYC with the toy set made
def test_two_step_training_run(tmp_path):
    args = ["--tower", "cnn", "--steps", "2", "--warmup-steps", "1", "--batch-size", "16", "--eval-samples",
            "32", "--workers", "1", "--log-every", "1", "--runs-dir", str(tmp_path), "--name", "cnn-seed0"]
    assert train.main(args) == 0
    run = tmp_path / "cnn-seed0"
    config = json.loads((run / "config.json").read_text())
    experiment, _ = parse_experiment(args)
    assert (experiment.image_tower, experiment.text_tower, experiment.variant) == ("cnn", "cnn", "w96")
    with torch.device("meta"):
        expected = towers.profile(towers.build_model(**experiment.model_kwargs()))["total_params"]
    assert config["params"]["total_params"] == expected
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2]
    assert all(math.isfinite(line["loss"]) for line in lines if "loss" in line)
    state = torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)["state_dict"]
    # one update per training step: the evaluation ran in eval mode and left the statistics alone
    assert state["visual.bn1.num_batches_tracked"].item() == 2
    assert not state["visual.bn1.running_var"].eq(1).all()


def test_grad_checkpointing_gives_the_same_gradients_and_recomputes_the_blocks():
    from open_clip.loss import ClipLoss

    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tokens = towers.tokenize([f"shape {i}" for i in range(8)], 16)
    models = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = towers.create_model("cnn-w64", text_overrides={"context_length": 16}).train()
        model.set_grad_checkpointing(checkpointing)
        ClipLoss()(*model(images, tokens)).backward()
        models.append(model)
    plain, checkpointed = models
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6, msg=name)
    # the recompute runs each block's BatchNorms a second time (the docstring's "counts that batch twice")
    assert plain.visual.layer1[0].bn1.num_batches_tracked.item() == 1
    assert checkpointed.visual.layer1[0].bn1.num_batches_tracked.item() == 2


def test_ddp_broadcasts_buffers_only_for_a_tower_with_running_statistics():
    """A BatchNorm tower's running statistics change every step: DDP must broadcast process 0's (as DDP and
    open_clip do by default) or each process evaluates and checkpoints its own; constants are not sent."""
    from launch.config import parse_experiment
    from launch.trainer import ddp_options, keeps_running_statistics

    wanted = {tower: keeps_running_statistics(parse_experiment(["--tower", tower])[0].model_kwargs())
              for tower in ("transformer", "mixer", "cnn")}
    assert wanted == {"transformer": False, "mixer": False, "cnn": True}
    mixed = parse_experiment(["--image-tower", "cnn", "--text-tower", "mixer"])[0]
    assert keeps_running_statistics(mixed.model_kwargs())
    assert ddp_options(True).broadcast_buffers is True and ddp_options().broadcast_buffers is False
