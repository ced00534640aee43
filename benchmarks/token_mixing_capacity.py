"""What each token-mixing mode of the Mixer text tower can read at EOT, and what it costs.

For every `--token-mixing` mode at B/32 (77-token context) and tiny (the toy recipe's 32): the hidden
units and token-mixing weights of one block on the paths into the EOT position at EOT 9 (ImageNet
prompts' median), 12 (COCO captions' median), 20 and the context's last position; the Mixer CLIP's
parameters (both towers Mixer, as `--tower mixer` trains them); the text tower's GFLOPs per caption at
the full context (training) and stopped at EOT 12 (evaluation). Counted on the meta device: B/32 takes
a second.

    python -m benchmarks.token_mixing_capacity            # markdown table, JSON to --out
    python -m benchmarks.token_mixing_capacity --out results/token_mixing/capacity.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.provenance import write_json
from runfolder.errors import OneLineParser, run_main
from towers.clip import create_model
from towers.profile import count_flops
from towers.token_mixing import TOKEN_MIXING_MODES

# variant -> the context it is trained with (B/32 on LAION: CLIP's 77; tiny on toy: the recipe's 32)
CONTEXTS = {"B/32": 77, "tiny": 32}
EOT_POSITIONS = (9, 12, 20)  # plus the context's last position
EVAL_EOT = 12


def eot_positions(context: int) -> tuple[int, ...]:
    return (*EOT_POSITIONS, context - 1)


def _text_gflops(model, length: int) -> float:
    tokens = torch.zeros(1, length, dtype=torch.long, device="meta")
    with torch.no_grad():
        return count_flops(lambda: model.text(tokens)) / 1e9


def capacity_row(variant: str, mode: str) -> dict:
    """One row of the table: reads at each EOT position, parameters and text GFLOPs for one mode."""
    context = CONTEXTS[variant]
    overrides = {"token_mixing": mode, **({"context_length": context} if context != 77 else {})}
    with torch.device("meta"):
        model = create_model(f"mixer-{variant.replace('/', '-')}", text_overrides=overrides)
    mixing = model.text.blocks[0].mlp_tokens
    reads = {str(eot): mixing.reads_at(eot) for eot in eot_positions(context)}
    text_params = sum(p.numel() for p in model.text.parameters()) + model.text_projection.numel()
    return dict(variant=variant, mode=mode, context=context, token_hidden=getattr(
        getattr(mixing, "fc1", None), "out_features", None), reads=reads,
        token_mixing_params=sum(p.numel() for p in mixing.parameters()) * len(model.text.blocks),
        text_params=text_params, total_params=sum(p.numel() for p in model.parameters()),
        text_gflops_train=_text_gflops(model, context),
        text_gflops_eval=_text_gflops(model, context if mode == "full" else EVAL_EOT + 1))


def capacity_table(variants: tuple[str, ...] = tuple(CONTEXTS)) -> list[dict]:
    return [capacity_row(variant, mode) for variant in variants for mode in TOKEN_MIXING_MODES]


def _reads(entry: dict, hidden: int | None) -> str:
    if entry["units"] is None:
        return f"{entry['weights']} w"
    return f"{entry['units']}/{hidden} ({entry['weights']:,} w)"


def markdown(rows: list[dict]) -> str:
    """The table as markdown: one row per variant and mode."""
    lines = ["| variant | token mixing | EOT 9 | EOT 12 | EOT 20 | last EOT | token-mixing params | "
             "CLIP params | text GFLOPs (train / eval) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        reads = [_reads(row["reads"][str(eot)], row["token_hidden"]) for eot in eot_positions(row["context"])]
        lines.append(f"| {row['variant']} | `{row['mode']}` | {' | '.join(reads[:3])} | "
                     f"{reads[3]} (EOT {row['context'] - 1}) | {row['token_mixing_params'] / 1e6:.3f}M | "
                     f"{row['total_params'] / 1e6:.2f}M | "
                     f"{row['text_gflops_train']:.3f} / {row['text_gflops_eval']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = OneLineParser(prog="python -m benchmarks.token_mixing_capacity", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = capacity_table()
    print(markdown(rows))
    if args.out:
        write_json(args.out, rows)  # strict JSON (NaN -> null), atomic, creates the folder
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    run_main(main)
