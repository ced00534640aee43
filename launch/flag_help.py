"""The training flags' help text and open_clip_train's spellings of them (used by `launch/config.py`).

Help comes from one place, the comments on the `Recipe` and `RunOptions` fields in launch/config.py
(the comment lines right above a field and the comment at the end of its line), so `--help` and the
code never drift apart. Where open_clip_train spells a flag value differently with the same meaning
(`--precision amp_bf16`, `--report-to tensorboard,wandb`) it is accepted; where the same word means
something else there (open_clip's `--precision bf16` and `pure_bf16` cast the weights), `--help` says
so and the weight-casting spellings are refused in one line.

    python launch/train.py --help
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize

# open_clip_train's --precision spellings that mean one of ours: autocast with fp32 weights
PRECISION_SPELLINGS = {"amp_bf16": "bf16", "amp_bfloat16": "bf16", "amp": "fp16"}
# open_clip_train's spellings that train bf16/fp16 weights: no recipe here does, so they are refused
WEIGHT_PRECISIONS = ("pure_bf16", "pure_fp16")
PRECISION_HELP = (
    "auto: bf16 autocast where the device runs bf16 natively, fp32 elsewhere (resolved before hashing); "
    "bf16 and fp16 are autocast with fp32 weights, optimizer state and loss, i.e. open_clip's amp_bf16 "
    "and amp (both spellings accepted), NOT open_clip's bf16/fp16, which cast the weights; "
    "pure_bf16/pure_fp16 are refused")
TRACKERS = ("tensorboard", "wandb")  # launch.run_record.make_trackers; `all` means both


def field_help(cls) -> dict[str, str]:
    """{field name: its comments as one line} for a dataclass defined in a source file."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen build): no help beyond the defaults
        return {}
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    lines = source.splitlines()
    found = {}
    for number, line in enumerate(lines, start=1):
        field = re.match(r"    (\w+)\s*:", line)
        if not field or line.lstrip().startswith("#"):
            continue
        above, row = [], number - 1
        while row >= 1 and lines[row - 1].lstrip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        text = " ".join([*above, comments.get(number, "")]).strip()
        found[field.group(1)] = text.replace("%", "%%")  # argparse formats help with %
    return found


def precision_value(value: str) -> str:
    """Our name for a --precision value (open_clip's amp spellings mapped); ValueError, one line, for
    the weight-casting ones and unknown ones."""
    if value in WEIGHT_PRECISIONS:
        raise ValueError(f"--precision {value}: open_clip's bf16/fp16 *weights* are not offered (every "
                         "recipe keeps fp32 weights); --precision bf16 here is open_clip's amp_bf16")
    return PRECISION_SPELLINGS.get(value, value)


def tracker_names(report_to: str) -> list[str]:
    """--report-to as tracker names: one of TRACKERS, `all`, or a comma list (open_clip's spelling)."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if "all" in names:
        names = [*TRACKERS]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown or not names:
        raise ValueError(f"--report-to {report_to}: expected tensorboard, wandb, all or a comma list such as "
                         "tensorboard,wandb")
    return list(dict.fromkeys(names))
