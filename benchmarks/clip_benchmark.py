"""Score our checkpoints with CLIP_benchmark's own evaluation code (`pip install -e ".[clip-benchmark]"`).

A thin entry point: it registers our models with CLIP_benchmark's model-loading mechanism (a
`mixclip` entry in `clip_benchmark.models.TYPE2FUNC`, so `--model_type mixclip` loads one with
`towers.load`), turns each `--model SPEC` of ours (a run dir, a checkpoint file, a folder that
`python -m towers.export` wrote, or a towers model name) into CLIP_benchmark's `--pretrained_model
NAME,PATH`, and hands every other flag to `clip_benchmark.cli` unchanged: every dataset, task and
option it has works as it documents them (docs/ecosystem.md lists what was run here).

    python -m benchmarks.clip_benchmark eval --model runs/mixer-seed0 --dataset imagenet1k-unverified \\
        --dataset_root /data/imagenet --no_amp        # reads /data/imagenet/val/<wnid>/*.JPEG
    python -m benchmarks.clip_benchmark eval --model runs/a --model runs/b --dataset vtab+ \\
        --dataset_root '/data/{dataset}' --output 'results/{dataset}_{model}_{task}.json'
    python -m benchmarks.clip_benchmark eval --model ViT-B-32 --pretrained laion400m_e32 \\
        --dataset mscoco_captions --dataset_root /data/mscoco     # open_clip names: CLIP_benchmark's own

Output files default to `{dataset}_{model}_{language}_{task}.json` with NAME as `{model}` (the run's
name): CLIP_benchmark's own default puts the checkpoint path in the name. Datasets are read from
`--dataset_root` as CLIP_benchmark lays them out; where one is missing it downloads it itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.data.files import InputError
from runfolder import CHECKPOINTS, RunFolder
from runfolder.errors import OneLineParser, run_main

MODEL_TYPE = "mixclip"
DEFAULT_OUTPUT = "{dataset}_{model}_{language}_{task}.json"


def load_mixclip(model_name: str, pretrained: str, cache_dir: str | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Callable, Callable]:
    """CLIP_benchmark's loader signature -> (model, eval transform, tokenizer). `pretrained` is what
    `towers.load` takes (a checkpoint file, an exported folder or a model name); `model_name` only
    names the result."""
    import towers

    model, preprocess = towers.load(pretrained, device=device)
    return model, preprocess, towers.get_tokenizer(model)


def topk_accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    """Share of rows whose target is among the top-k logits, per k. CLIP_benchmark 1.6.2's `accuracy`
    computes this with float() of a 1-element array, which numpy >= 2.4 refuses (TypeError)."""
    ranked = output.topk(max(topk), 1, True, True)[1]
    hits = ranked.eq(target.view(-1, 1))
    return [hits[:, :k].any(dim=1).float().mean().item() for k in topk]


def register() -> None:
    """Add `mixclip` to CLIP_benchmark's model types (its CLI reads the same list for --model_type),
    and give its zero-shot metrics a top-k accuracy that runs under numpy >= 2.4."""
    from clip_benchmark import models
    from clip_benchmark.metrics import zeroshot_classification

    models.TYPE2FUNC[MODEL_TYPE] = load_mixclip
    if MODEL_TYPE not in models.MODEL_TYPES:
        models.MODEL_TYPES.append(MODEL_TYPE)
    zeroshot_classification.accuracy = topk_accuracy


def named_model(spec: str) -> str:
    """`NAME,PATH` for CLIP_benchmark's --pretrained_model from one --model SPEC of ours."""
    import towers
    from towers.export import OPEN_CLIP_CONFIG, OUR_CONFIG

    path = Path(spec)
    if path.is_dir() and ((path / OUR_CONFIG).is_file() or (path / OPEN_CLIP_CONFIG).is_file()):
        name, target = path.resolve().name, str(path)  # an exported folder
    elif path.is_dir():
        checkpoint = RunFolder(path).latest()
        if checkpoint is None or not checkpoint.is_file():
            raise InputError(f"--model {spec}: run dir without a readable checkpoints/latest, and not a "
                             "folder python -m towers.export wrote")
        name, target = f"{path.resolve().name}-{checkpoint.stem}", str(checkpoint)
    elif path.is_file():
        in_run = path.resolve().parent.name == CHECKPOINTS
        name = f"{path.resolve().parent.parent.name}-{path.stem}" if in_run else path.stem
        target = str(path)
    elif spec in towers.available_models():
        name, target = f"{spec}-random", spec
    else:
        raise InputError(f"--model {spec}: not found; expected a run dir, a checkpoint file, an exported "
                         f"folder or a model name ({', '.join(towers.available_models()[:4])}, ...)")
    if "," in name + target:  # CLIP_benchmark splits NAME,PATH at the comma
        raise InputError(f"--model {spec}: CLIP_benchmark cannot take a path or name with a comma")
    return f"{name},{target}"


def clip_benchmark_argv(argv: list[str]) -> list[str]:
    """Our flags rewritten into CLIP_benchmark's: each --model becomes a --pretrained_model entry."""
    ours = OneLineParser(add_help=False)
    ours.add_argument("--model", action="extend", nargs="+", default=[])
    known, rest = ours.parse_known_args(argv)
    if not known.model:
        return rest  # CLIP_benchmark's own flags only (e.g. --model_type mixclip --pretrained_model N,P)
    from towers.checkpoints import is_open_clip_name

    if all(is_open_clip_name(spec) for spec in known.model):
        return argv  # CLIP_benchmark's own open_clip models (--model ViT-B-32 --pretrained laion400m_e32)
    out = list(rest) + ["--pretrained_model", *[named_model(spec) for spec in known.model]]
    if "--model_type" not in rest:
        out += ["--model_type", MODEL_TYPE]
    if "--output" not in rest:
        out += ["--output", DEFAULT_OUTPUT]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from clip_benchmark import cli
    except ModuleNotFoundError:
        print('error: CLIP_benchmark is not installed (pip install -e ".[clip-benchmark]")', file=sys.stderr)
        return 2
    register()
    try:
        forwarded = clip_benchmark_argv(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.argv = ["clip_benchmark", *forwarded]  # its CLI parses sys.argv itself
    cli.main()
    return 0


if __name__ == "__main__":
    run_main(main)
