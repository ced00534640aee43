"""Regenerate the committed reference comparison: Transformer vs Mixer on `toy`, 13 headline seeds each.

Every run uses the default recipe and the default variant; only `--tower` and `--seed` differ. Then
the benchmarks score every run (STS on the 7 local sets, the toy word-order tasks; zero-shot on the toy
val split comes from the run's own final evaluation), throughput is timed for both tower pairs, and
`results.report` writes the report. Commands run as subprocesses: `results` imports no model code.

    python -m results.drivers.reference                      # all of it (docs/results/reference.md: how long)
    python -m results.drivers.reference --seeds 0 --towers mixer transformer --out /tmp/ref
    python -m results.drivers.reference --seeds 0 --out results/lr_sweep/lr5e-4 --train-flags "--lr 5e-4" \
        --skip-sts --skip-word-order --skip-throughput --no-report   # one point of an lr sweep
    python -m results.drivers.reference --towers mixer --run-prefix mixer-caption --out results/token_mixing \
        --train-flags "--token-mixing caption" --skip-throughput --no-report   # one token-mixing arm

Writes into `--out` (default `results/reference/`): `runs/<tower>-seed<k>/` (config.json,
metrics.jsonl, final_eval.json; checkpoints are deleted afterwards unless --keep-checkpoints, they are
large and reproducible), `scores/`, `report/` (report.md, report.html, figures) and `timings.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from results.report import write_report
from runfolder import RunFolder
from runfolder.code_version import ALLOW_DIRTY_HELP, require_clean_tree
from runfolder.errors import OneLineParser, run_main

REPO = Path(__file__).resolve().parents[2]
# Design choices (token mixing, text mask, steps) were made on seeds 0-2; the headline comparison runs on
# seeds no choice has seen, so it does not inherit the winner's curse (docs/toy-protocol.md#seeds).
# 13 a tower: the Transformer's seed spread needs that many for a +-3-point interval of the difference.
HEADLINE_SEEDS = tuple(range(10, 23))
EVAL_EVERY = 64  # ten evaluations of a default run, two in its cooldown: the curve the read-out is checked on


def _run(command: list[str], log: Path) -> float:
    """Run one command from the repo root, its output appended to `log`; returns its wall time."""
    print("+", " ".join(command), flush=True)
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"error: `{' '.join(command)}` failed with exit status {result.returncode}; see {log}")
    return time.perf_counter() - started


def _trained_as(run_dirs: list[Path]) -> tuple[str, str, int]:
    """(precision: bf16 or fp32, variant, batch size) the arms were trained with, from their run records,
    so throughput times the towers as they were trained."""
    for run_dir in run_dirs:
        if RunFolder(run_dir).is_run():
            config = RunFolder(run_dir).read_run_config()
            trained = config.require("experiment.recipe.precision")
            precision = "bf16" if trained in ("bf16", "fp16") else "fp32"
            return (precision, config.require("experiment.variant").replace("/", "-"),
                    config.require("experiment.recipe.batch_size"))
    return "fp32", "w96", 128


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m results.drivers.reference", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/reference"), help="output folder")
    parser.add_argument("--towers", nargs="+", default=["transformer", "mixer"], help="tower families")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(HEADLINE_SEEDS),
                        help="recipe seeds (default: the headline seeds, never used to choose a design; "
                        "docs/toy-protocol.md#seeds)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep the runs' checkpoints")
    parser.add_argument("--skip-training", action="store_true",
                        help="reuse the runs (and STS scores) already in --out; runs that finished are "
                        "always reused, delete their folder to retrain them")
    parser.add_argument("--skip-sts", action="store_true", help="do not score the runs on STS")
    parser.add_argument("--skip-word-order", action="store_true",
                        help="do not score the runs on the word-order benchmark")
    parser.add_argument("--skip-throughput", action="store_true", help="do not time the tower pairs")
    parser.add_argument("--no-report", action="store_true", help="do not write the report")
    parser.add_argument("--train-flags", default="",
                        help="extra launch/train.py flags for every run, e.g. \"--lr 5e-4\" (for a sweep; "
                        "the reference itself is the default recipe)")
    parser.add_argument("--run-prefix", default=None,
                        help="name the runs <prefix>-seed<k> instead of <tower>-seed<k> (one tower only), so "
                        "the arms of a sweep share one --out, e.g. --run-prefix mixer-caption")
    parser.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    args = parser.parse_args(argv)
    if not args.skip_training:
        require_clean_tree(args.allow_dirty)
    if args.run_prefix and len(args.towers) != 1:
        parser.error(f"--run-prefix {args.run_prefix}: expected one --towers entry, got {args.towers}")
    out = args.out
    runs_dir, scores_dir = out / "runs", out / "scores"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    python = sys.executable
    timings_file = out / "timings.json"  # wall seconds per command, kept across resumed regenerations
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    run_dirs = []
    for seed in args.seeds:
        for tower in args.towers:
            name = f"{args.run_prefix or tower}-seed{seed}"
            run_dirs.append(runs_dir / name)
            if args.skip_training or RunFolder(runs_dir / name).final_eval.is_file():
                continue  # finished runs are kept: the command resumes an interrupted regeneration
            if (runs_dir / name).exists():
                shutil.rmtree(runs_dir / name)
            timings[f"train {name}"] = _run(
                [python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                 "launch/train.py", "--tower", tower, "--seed", str(seed),
                 "--runs-dir", str(runs_dir), "--name", name, "--eval-every", str(EVAL_EVERY),
                 *shlex.split(args.train_flags)], log)
    scored = [benchmark for benchmark, skip in (("sts", args.skip_sts), ("word_order", args.skip_word_order))
              if not skip]
    for run_dir, benchmark in ((run_dir, benchmark) for run_dir in run_dirs for benchmark in scored):
        if (scores_dir / benchmark / f"{run_dir.name}.json").is_file() and args.skip_training:
            continue
        if not any(RunFolder(run_dir).checkpoints.glob("*.pt")):
            print(f"note: {run_dir} has no checkpoint left, {benchmark} skipped (delete the folder to "
                  "retrain it)")
            continue
        timings[f"{benchmark} {run_dir.name}"] = _run(
            [python, "-m", f"benchmarks.{benchmark}", "--model", str(run_dir),
             "--results-dir", str(scores_dir)], log)
    precision, variant, batch_size = ("fp32", "w96", 128) if args.skip_throughput else _trained_as(run_dirs)
    for tower in [] if args.skip_throughput else args.towers:
        timings[f"throughput {tower}"] = _run(
            [python, "-m", "benchmarks.performance.throughput", "--model", f"{tower}-{variant}",
             "--batch-size", str(batch_size), "--steps", "10", "--warmup", "3", "--precision", precision,
             # the two arms are each other's reference; open_clip's ViT-B-32 is too slow for this CPU
             "--reference", "none", "--results-dir", str(scores_dir)], log)
    if not args.keep_checkpoints:  # the whole folder: a `latest` pointer left behind would name nothing
        for run_dir in run_dirs:
            shutil.rmtree(RunFolder(run_dir).checkpoints, ignore_errors=True)
    # merged with what is there now: two drivers may share one --out (say, one per image family)
    written = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    timings_file.write_text(json.dumps({**written, **timings}, indent=2) + "\n")
    if not args.no_report:
        result = write_report(run_dirs, scores_dir, out / "report")
        print(result["headline_table"])
        print(f"wrote {result['report_md']}")


if __name__ == "__main__":
    run_main(main)
