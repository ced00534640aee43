"""The tower 2x2s on toy: text family x text mask, with each image family (8 arms), N seeds each; or
image family x text family at one mask, its matched cells taken from a committed comparison.

Every arm is one `results.drivers.reference` sweep arm (the default recipe; only the towers, the text mask and
the seed differ), trained and scored (STS, the toy word-order tasks) into one `--out`; finished runs
are kept, so rerunning the same command resumes an interrupted 2x2. Then `results.report` writes one
report over all arms, with the factorial analysis (results/factorial.py; docs/text-mask.md).

    python -m results.drivers.text_mask_2x2  # 8 arms x seeds 0 1 2 into results/text_mask
    python -m results.drivers.text_mask_2x2 --seeds 3 4 5 --out results/text_mask_confirm  # confirmation
    python -m results.drivers.text_mask_2x2 --seeds 0 --train-flags "--steps 2" --skip-sts --skip-word-order \
        --out /tmp/2x2                                        # a smoke test
    python -m results.drivers.text_mask_2x2 --text-masks caption --seeds 10 11 12 13 --skip-sts \
        --skip-word-order --matched-runs results/reference/runs --out results/towers_2x2  # the towers 2x2

`--matched-runs DIR` trains only the cross cells (one family's image tower with the other's text tower)
and reports them with every run in DIR whose towers are one family at the same mask (the reference's
13 seeds a tower), so the decomposition is of the gap that comparison states.

Runs are named `<text family>-text-<mask>-<image family>-image-seed<k>` under `--out/runs/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results.drivers import reference
from results.report import write_report
from runfolder import RunFolder
from runfolder.code_version import ALLOW_DIRTY_HELP, require_clean_tree
from runfolder.errors import OneLineParser, run_main

FAMILIES = ("transformer", "mixer")
TEXT_MASKS = ("causal", "caption")  # towers.text_mask.TEXT_MASKS (results imports no model code)


def arm_name(text_family: str, text_mask: str, image_family: str) -> str:
    return f"{text_family}-text-{text_mask}-{image_family}-image"


def arms(text_families: list[str], text_masks: list[str],
         image_families: list[str]) -> list[tuple[str, str, str]]:
    """(text family, text mask, image family) of every arm, text family outermost."""
    return [(text, mask, image) for text in text_families for mask in text_masks for image in image_families]


def matched_runs(runs_dir: Path, text_masks: list[str]) -> list[Path]:
    """The finished runs in `runs_dir` whose image and text towers are one family, at one of `text_masks`."""
    if not runs_dir.is_dir():
        raise ValueError(f"--matched-runs {runs_dir}: expected a folder of run folders")
    found = []
    for run in map(RunFolder, sorted(runs_dir.iterdir())):
        if not run.is_run():
            continue
        experiment = run.read_config()["experiment"]
        if (experiment["image_tower"] == experiment["text_tower"]
                and experiment["recipe"].get("text_mask") in text_masks and run.final_eval.is_file()):
            found.append(run.path)
    if not found:
        raise ValueError(f"--matched-runs {runs_dir}: expected finished same-family runs at --text-masks "
                         f"{' '.join(text_masks)}, found none")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m results.drivers.text_mask_2x2", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/text_mask"), help="output folder")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="recipe seeds per arm")
    parser.add_argument("--text-families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--text-masks", nargs="+", choices=TEXT_MASKS, default=list(TEXT_MASKS))
    parser.add_argument("--image-families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--train-flags", default="", help="extra launch/train.py flags for every run")
    parser.add_argument("--skip-sts", action="store_true", help="do not score the runs on STS")
    parser.add_argument("--skip-word-order", action="store_true", help="do not score the word-order tasks")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep the runs' checkpoints")
    parser.add_argument("--no-report", action="store_true", help="do not write the report")
    parser.add_argument("--matched-runs", type=Path, default=None,
                        help="a runs folder (e.g. results/reference/runs) whose same-family runs are the "
                        "matched cells: train only the cross cells, report them together")
    parser.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # checked before training: a wrong folder should not cost the cross cells' runs first
        matched = matched_runs(args.matched_runs, args.text_masks) if args.matched_runs else []
    except ValueError as error:
        parser.error(str(error))
    require_clean_tree(args.allow_dirty)
    run_dirs = []
    for text, mask, image in arms(args.text_families, args.text_masks, args.image_families):
        if args.matched_runs and text == image:
            continue
        name = arm_name(text, mask, image)
        flags = f"--image-tower {image} --text-tower {text} --text-mask {mask} {args.train_flags}".strip()
        reference.main(["--out", str(args.out), "--towers", text, "--seeds", *map(str, args.seeds),
                        "--run-prefix", name, "--train-flags", flags, "--skip-throughput", "--no-report",
                        *(["--skip-sts"] if args.skip_sts else []),
                        *(["--skip-word-order"] if args.skip_word_order else []),
                        *(["--keep-checkpoints"] if args.keep_checkpoints else []),
                        *(["--allow-dirty"] if args.allow_dirty else [])])
        run_dirs += [args.out / "runs" / f"{name}-seed{seed}" for seed in args.seeds]
    run_dirs += matched
    if args.no_report:
        return None
    # the arms differ in the recipe's text_mask by design: the report keeps them apart and says so
    result = write_report(run_dirs, args.out / "scores", args.out / "report", allow_mixed=True,
                          scores_required=not (args.skip_sts and args.skip_word_order))
    print(result["headline_table"])
    if not result["factorial"].empty:
        print(result["factorial"].to_string(index=False))
    print(f"wrote {result['report_md']}")
    return result


if __name__ == "__main__":
    run_main(main)
