"""Names the layers share: the values of recipe fields (image init and pool, toy task, precision, template
set, size-variant aliases), the temperature cap, the evaluation keys runs log, the word-order tasks,
the text-mask rule of runs recorded before the text mask, and every benchmark's version.

Standard library only, so `results/` can import them beside `launch/` and `towers/` (one definition,
no copies; tests/test_records.py fails on a second assignment). Each tuple lists the accepted values,
the default first.

    from runfolder.vocabulary import IMAGE_INITS, IMAGE_POOLS, TOY_TASKS, eval_key, legacy_text_reading
"""

from __future__ import annotations

# The image tower's initial weights. `library`: what its library gives (open_clip's ViT: PyTorch's layer
# defaults, since open_clip's VisionTransformer.init_parameters is a no-op; timm's Mixer: timm's init).
# `original`: the init of the tower's original training code (the ViT: CLIP's normal init, the scheme
# open_clip applies to its text Transformer; the Mixer: the Flax defaults of the Mixer paper's JAX code).
IMAGE_INITS = ("library", "original")
# How the image tower pools its tokens. `library`: the tower's own (ViT: the class token; Mixer: the mean
# of the patch tokens); `avg`: the mean of the patch tokens; `map`: attention pooling with one learned
# query (open_clip's AttentionalPooler).
IMAGE_POOLS = ("library", "avg", "map")
# The embedded toy set's task: `standard` (one large target, small distractors) or `hard` (a smaller
# target among more and larger distractors): benchmarks/data/toy.py.
TOY_TASKS = ("standard", "hard")

# The zero-shot prompt template sets, by name (the templates themselves: benchmarks.zeroshot_classifier).
TEMPLATE_SET_NAMES = ("openai", "simple")
# The training precisions (`--precision`; `auto` resolves per device in towers.precision). The runners
# score in the first three: fp16 autocast is a training choice only.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCORING_PRECISIONS = PRECISIONS[:3]
# CLIP's temperature cap: exp(logit_scale) never exceeds 100 (the trainer clamps logit_scale at log(100))
MAX_LOGIT_SCALE = 100.0

# What each in-training evaluation logs (metrics.jsonl, the trackers, final_eval.json) as
# `eval/<set>_<key>`: `eval_key("toy", "top1_seen")` is `eval/toy_top1_seen`.
EVAL_PREFIX = "eval/"
LOGGED_EVAL_KEYS = (
    "top1", "top5", "mean_per_class_recall", "top1_ci95", "n", "colour_acc", "shape_acc",
    "top1_seen", "top1_seen_ci95", "n_seen", "top1_held_out", "top1_held_out_ci95", "n_held_out",
    "colour_acc_held_out", "shape_acc_held_out", "robust_top1", "i2t_r1", "t2i_r1", "val_loss",
)
CI_SUFFIX = "_ci95"  # a [low, high] bootstrap 95% interval beside its metric


def eval_key(eval_set: str, key: str) -> str:
    return f"{EVAL_PREFIX}{eval_set}_{key}"


# final_eval.json names the toy evaluation's values without the prefix: the tuning grid and the controls
# read these three
TOY_TOP1_SEEN, TOY_TOP1_HELD_OUT, TOY_VAL_LOSS = "toy_top1_seen", "toy_top1_held_out", "toy_val_loss"


# The word-order benchmark's toy tasks (benchmarks.word_order), each a kind of negative caption.
WORD_ORDER_TASKS = ("swap-attribute", "swap-background", "swap-object", "shuffle")

# The text mask each Mixer token-mixing mode reads with (towers.text_mask); `full` is the caption read
# with its padding too (the seed paper's mode, kept for replication).
TOKEN_MIXING_TEXT_MASK = {"causal": "causal", "causal-front": "causal", "triangular": "causal",
                          "causal-prefix": "causal", "caption": "caption", "full": "caption"}
# The Mixer token mixing a text mask selects when --token-mixing is not given.
MIXER_TOKEN_MIXING = {"causal": "causal-prefix", "caption": "caption"}


def legacy_text_reading(text_family: str, token_mixing: str | None) -> tuple[str, str]:
    """(text_mask, token_mixing) of a run recorded before the text mask existed: the Transformer was
    causal (its recorded token mixing did nothing, so it becomes the one `causal` selects), the Mixer
    read with its token mixing's mask."""
    if text_family == "mixer" and token_mixing in TOKEN_MIXING_TEXT_MASK:
        return TOKEN_MIXING_TEXT_MASK[token_mixing], token_mixing
    return "causal", MIXER_TOKEN_MIXING["causal"]

# Two names of one size variant: `tiny` is `w128` (the toy ladder's width-128 row), kept readable for the
# runs, checkpoints and model names that spell it (`mixer-tiny`). A family's table holds the row once.
VARIANT_ALIASES = {"tiny": "w128"}


# Every benchmark's name and version, stamped into its score records (runfolder.score_records). Bump a
# runner's version whenever a change could move its numbers (data, protocol, metric).
BENCHMARK_VERSIONS = {
    "imagenet_zeroshot": "1.0",
    "toy_zeroshot": "1.0",
    "sts": "1.0",
    "retrieval": "1.0",
    "word_order": "1.0",
    "word_order_captions": "1.0",
    "word_order_sugarcrepe": "1.0",
    "throughput": "1.0",
    "gpu_check": "1.0",
}


def check_choice(name: str, value, choices) -> object:
    """`value` if it is one of `choices`, else a one-line ValueError naming `name` and the choices."""
    if value not in choices:
        raise ValueError(f"{name} {value!r}: expected one of {list(choices)}")
    return value
