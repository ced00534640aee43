"""The registry of zero-shot evaluations: each set's name -> its scorer, benchmark version and the keys
training logs of it, and the one dispatcher that scores a set by name.

`python -m benchmarks.imagenet_zeroshot --dataset NAME` and training's `--evals NAME,...` (launch/train.py,
at every `--eval-every` and at the end) both resolve a set through `eval_set` and score it through
`zero_shot_eval`, so a run's logged numbers are the runner's on the same weights. A new set is one
`Evaluation` here: its scorer takes (encoder, data, batch_size, workers, limit, seed, progress,
keep_predictions, rank, world_size) and returns percent scores with at least top1, top5, top1_ci95, n.

    python -m benchmarks.imagenet_zeroshot --model runs/mixer-w96-seed0 --dataset toy
    accelerate launch launch/train.py --tower mixer --evals toy,imagenet --imagenet-val /data/imagenet/val
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import imagenet_scorer, toy_zeroshot
from benchmarks.data.files import InputError
from benchmarks.data.imagenet import IMAGEFOLDER_LAYOUT, is_shard_spec
from benchmarks.encoder import Encoder
from runfolder.vocabulary import BENCHMARK_VERSIONS, LOGGED_EVAL_KEYS


@dataclass
class Evaluation:
    """One zero-shot set: how it is scored, the benchmark its results are filed under (its folder in the
    results dir and its version, `runfolder.vocabulary.BENCHMARK_VERSIONS`), the keys of its scores
    training logs and how the trainer prints it."""

    name: str
    scorer: Callable[..., dict[str, Any]]
    benchmark: str
    logged_keys: tuple[str, ...]
    summary: Callable[[dict[str, Any]], str]
    # the scorer's extra arguments this set takes (zero_shot_eval passes them on; the toy set has no
    # templates and builds its cheap classifier afresh: the model changes during training)
    settings: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        return BENCHMARK_VERSIONS[self.benchmark]


EVALUATIONS = {
    # both log the vocabulary's keys (eval/<set>_<key>) that their scores hold: ImageNet the first five
    "toy": Evaluation("toy", toy_zeroshot.toy_eval, "toy_zeroshot", LOGGED_EVAL_KEYS,
                      toy_zeroshot.summary_line),
    "imagenet": Evaluation("imagenet", imagenet_scorer.imagenet_eval, "imagenet_zeroshot", LOGGED_EVAL_KEYS,
                           imagenet_scorer.summary_line, settings=("templates", "cache")),
}
EVAL_SETS = tuple(EVALUATIONS)  # what --dataset and training's --evals name


def eval_set(name: str, data: str | None, templates: str = "openai", workers: int = 0) -> dict[str, Any]:
    """`zero_shot_eval`'s arguments for the set `name` at `data`, checked now (one-line InputError):
    the runner's --dataset/--data and training's --evals/--imagenet-val both resolve through here."""
    if name not in EVAL_SETS:
        raise InputError(f"{name!r}: not a zero-shot set; expected one of {', '.join(EVAL_SETS)}")
    if name == "toy":
        return {"dataset": "toy", "data": data}
    if data is None:
        raise InputError(f"imagenet needs its data: {IMAGEFOLDER_LAYOUT}, or WebDataset shards with .cls")
    if not is_shard_spec(data) and not Path(data).is_dir():
        raise InputError(f"{data}: no such directory; expected {IMAGEFOLDER_LAYOUT} "
                         "or WebDataset shards with .cls")
    return {"dataset": "imagenet", "data": data, "templates": templates, "workers": workers}


def zero_shot_eval(encoder: Encoder, dataset: str = "imagenet", data: str | Path | None = None,
                   batch_size: int = 64, workers: int = 0, limit: int | None = None,
                   templates: str = "openai", cache: bool | None = None, seed: int = 0,
                   progress: bool = True, keep_predictions: bool = False, rank: int = 0,
                   world_size: int = 1) -> dict[str, Any]:
    """Zero-shot accuracy of ``encoder`` on the set ``dataset`` (what ``python -m
    benchmarks.imagenet_zeroshot`` and training run).

    dataset="imagenet": ``data`` is a folder in ILSVRC val layout or ImageNetV2's class-index layout, or
    a WebDataset shard spec with ``.cls``; classes/templates are open_clip's (``templates="openai"``:
    80, ``"simple"``: 7).
    dataset="toy": the embedded data set's val split (``data``: None for the default toy set, a cache
    root for ``toy_data.ensure_toy``, or the val shard pattern itself), scored by
    ``benchmarks.toy_zeroshot.toy_eval`` (seen and held-out classes, R@1, val loss; its docstring).

    Returns (percent): ``top1``, ``top5``, ``mean_per_class_recall`` (over the classes present in the
    data), ``top1_ci95`` ([low, high], bootstrap of top-1, ``BOOTSTRAP_RESAMPLES`` resamples, ``seed``),
    ``n``, ``classes_present``, ``num_classes``, ``templates``. ``limit`` evaluates at most that many
    images (folders: evenly spaced; shards: the first, or with several processes an equal part of each
    one's shards). ``cache`` (default: on for ImageNet, off for toy whose classifier is cheap and whose
    model changes during training) stores the classifier under $MIXCLIP_CACHE/zeroshot.
    ``keep_predictions`` adds ``predictions`` ({"ranked": top-k class ids per image, "targets"}).

    Distributed: every one of ``world_size`` processes calls this with its ``rank`` (and its own
    encoder); each builds its share of the classifier and scores its share of the images, two gathers
    (the classifier, the predictions) collect them, and every process returns the same result. On a
    folder the result equals the single-process one exactly. The model keeps its train/eval mode.
    """
    if encoder.preprocess is None:
        raise InputError(f"model {encoder.model_id} is text-only; zero-shot needs an image tower")
    if dataset not in EVALUATIONS:
        raise InputError(f"--dataset {dataset}: expected imagenet or toy")
    evaluation = EVALUATIONS[dataset]
    chosen = {key: value for key, value in {"templates": templates, "cache": cache}.items()
              if key in evaluation.settings}
    return evaluation.scorer(encoder, data, batch_size, workers, limit, seed=seed, progress=progress,
                             keep_predictions=keep_predictions, rank=rank, world_size=world_size, **chosen)
