"""Each scoring command of the user guide (docs/usage.md, which the README links), run as a user of a
fresh clone runs it: from a folder outside the repo, without the shared data folder (so the defaults
reach for the network sources), with those network sources replaced by local copies (STS: MTEB's HF
loader reads the shared TSVs; open_clip's `laion400m_e32` download builds a tiny random ViT) and a tiny
run standing in for the B/32 one."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import open_clip
import pytest
import torch

import towers
from benchmarks.data import sts_sets
from benchmarks.data import toy as toy_data
from benchmarks.data.captions import load_caption_folder
from benchmarks.zeroshot_classifier import TEMPLATE_SETS
from runfolder import point_latest

REPO = Path(__file__).resolve().parents[1]
RUN = "runs/mixer-B-32-seed0"
TINY_OPEN_CLIP = {"embed_dim": 64,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                               "layers": 2}}


def readme_scoring_commands() -> list[str]:
    guide = (REPO / "docs" / "usage.md").read_text()  # the README links its scoring commands there
    section = guide[guide.index("## Score a checkpoint"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("python -m ")]


def _user_folder(root: Path, shared_data: Path) -> dict[str, str]:
    """What a user has: a run folder (tiny Mixer, 2 checkpoints), ImageNet val (4 classes of the shared
    samples), COCO captions made by the documented converter from a COCO-format file."""
    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny")
    checkpoints = root / RUN / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (1, 2):
        path = checkpoints / f"step_{step:08d}.pt"
        torch.save({"model_config": model.model_config, "state_dict": model.state_dict(), "step": step}, path)
    point_latest(checkpoints, path)
    val = root / "imagenet" / "val"
    val.mkdir(parents=True)
    for wnid in sorted(p.name for p in (shared_data / "imagenet_samples").iterdir() if p.is_dir())[:4]:
        (val / wnid).symlink_to((shared_data / "imagenet_samples" / wnid).resolve())
    shared = load_caption_folder(shared_data / "captions")
    keep = range(6)

    annotations = {"images": [{"id": i, "file_name": Path(shared.image_ids[i]).name} for i in keep],
                   "annotations": [{"image_id": image, "caption": caption} for caption, image in
                                   zip(shared.captions, shared.caption_image, strict=True) if image in keep]}
    (root / "captions_val2017.json").write_text(json.dumps(annotations))
    from benchmarks.data.captions import main as make_captions

    make_captions(["--coco", str(root / "captions_val2017.json"),
                   "--images", str(shared_data / "captions" / "images"), "--out", str(root / "coco-val2017")])
    toy = toy_data.ensure_toy(root / "toy", num_train=8, num_val=48, shard_size=48, progress=False)
    return {"/data/imagenet/val": str(val), "/data/coco-val2017": str(root / "coco-val2017"),
            "toy_val": toy.val}


@pytest.mark.slow
def test_every_readme_scoring_command_runs_from_a_folder_outside_the_repo(tmp_path, shared_data,
                                                                       monkeypatch, capsys):
    user = tmp_path / "user"
    user.mkdir()
    assert REPO not in user.resolve().parents
    paths = _user_folder(user, shared_data)
    monkeypatch.chdir(user)
    monkeypatch.setenv("MIXCLIP_SHARED_DATA", str(user / "no-shared-data"))  # a fresh clone has none
    # network sources -> local copies
    monkeypatch.setattr(sts_sets, "_load_from_hub", lambda name: sts_sets.read_sts_tsv(
        shared_data / "sts" / sts_sets.STS_FILES[name], name).head(100))
    downloads = []
    create = open_clip.create_model_and_transforms
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ViT-readme-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "configs")

    def offline_open_clip(arch, pretrained=None, **kwargs):
        if pretrained in open_clip.list_pretrained_tags_by_model(arch):
            downloads.append((arch, pretrained))
            torch.manual_seed(0)  # a tiny random ViT stands in for the downloaded weights
            return create("ViT-readme-tiny", **kwargs)
        return create(arch, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline_open_clip)
    # the 1,000-class classifier with 1 template instead of 80 (cost only; the commands are the test)
    monkeypatch.setitem(TEMPLATE_SETS, "openai", TEMPLATE_SETS["openai"][:1])
    cheaper = {  # flags appended for this CPU (B/32 timing and the full toy set are not the test)
        "benchmarks.performance.throughput": ["--model", "mixer-tiny", "--batch-size", "4", "--steps", "1",
                                  "--warmup", "1", "--reference", "none"],
        "benchmarks.word_order": ["--data", paths["toy_val"], "--limit", "8", "--sts-sentences", "16"],
    }
    commands = readme_scoring_commands()
    assert len(commands) >= 8 and any("--pretrained laion400m_e32" in c for c in commands)
    outcomes, transcript = {}, []
    for command in commands:
        for placeholder, local in paths.items():
            command = command.replace(placeholder, local)
        argv = shlex.split(command)
        module = argv[2]
        if module == "benchmarks.performance.decode_bench":
            continue  # not a scoring command: times JPEG decoding (docs/gpu_path.md)
        argv = argv[3:] + cheaper.get(module, [])
        try:
            importlib.import_module(module).main(argv)
            outcomes[command] = 0
        except SystemExit as exit_info:
            outcomes[command] = exit_info.code
        out = capsys.readouterr()
        lines = out.out.splitlines()
        said = [line for line in lines if line.startswith("wrote ")] or lines[-1:]
        transcript.append(f"$ {command}\n  exit {outcomes[command]}; " + "; ".join(
            said + [line for line in out.err.splitlines() if line.startswith("error")]))
    print("\n".join(transcript))  # the transcript (pytest -rP shows it)
    gpu = [c for c in outcomes if "gpu_check" in c]
    assert all(outcomes[c] == 2 for c in gpu)  # no CUDA here: one line, exit 2 (documented)
    assert all(code in (0, None) for c, code in outcomes.items() if c not in gpu), outcomes
    assert downloads == [("ViT-B-32", "laion400m_e32")]
    scores = user / "results" / "scores"
    written = {p.relative_to(scores).as_posix() for p in scores.rglob("*.json")}
    assert {"imagenet_zeroshot/mixer-B-32-seed0__imagenet-val.json",
            "imagenet_zeroshot/mixer-B-32-seed0-step_00000001__imagenet-val.json",
            "imagenet_zeroshot/mixer-B-32-seed0-step_00000002__imagenet-val.json",
            "imagenet_zeroshot/open_clip-ViT-B-32-laion400m_e32__imagenet-val.json",
            "sts/mixer-B-32-seed0__mteb-hf.json", "sts/mteb/mixer-B-32-seed0__mteb-hf/STS12.json",
            "retrieval/mixer-B-32-seed0__coco-val2017.json",
            "retrieval/clip_benchmark/mixer-B-32-seed0__coco-val2017_en_zeroshot_retrieval.json",
            } <= written, sorted(written)
    assert any(p.startswith("word_order/mixer-B-32-seed0__") for p in written)
    assert any(p.startswith("throughput/") for p in written)
