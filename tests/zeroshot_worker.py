"""Worker for tests/test_bench_zeroshot_processes.py: ImageNet zero-shot of one checkpoint on a folder,
in 1 or 2 processes (under `accelerate launch`); rank 0 saves the result with its predictions to --out.

Every process uses one torch thread, so a single process and each of two run the same kernels.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.encoder import load_our_model
from benchmarks.evaluations import zero_shot_eval
from benchmarks.process_group import join_launched_processes
from runfolder.errors import run_main


def score(model: str, data: str, limit: int | None, rank: int = 0, world_size: int = 1,
          device: str = "cpu") -> dict:
    """This process's call: its share of the images (all of them with one process), with predictions."""
    return zero_shot_eval(load_our_model(model, device), "imagenet", data, batch_size=16, limit=limit,
                          templates="simple", cache=False, progress=False, keep_predictions=True, rank=rank,
                          world_size=world_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank, world_size, device = join_launched_processes()
    result = score(args.model, args.data, args.limit, rank, world_size, device or "cpu")
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump({"world_size": world_size, **result}, f)


if __name__ == "__main__":
    run_main(main)  # an entry point like the product's: exits without the final collection
