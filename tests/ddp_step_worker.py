"""Worker for tests/test_trainer_equivalence.py: 3 contrastive steps on fixed synthetic batches.

Run under `accelerate launch` with 1 or 2 processes; each process takes its rows of the global batch
of 8 (rank r of W: rows r*8/W .. (r+1)*8/W), split into `accum` micro-batches. Each `--case
NAME:ACCUM[:local]` trains a fresh model from the same seed in this one launch (a launch costs seconds
of imports; a case, a fraction of one). Rank 0 saves every case's losses and final weights to `--out`.
Runs in float64.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

import towers
from launch.config import Recipe
from launch.trainer import ContrastiveStep, build_optimizer, ddp_options, device_settings
from runfolder.errors import run_main

GLOBAL_BATCH, STEPS = 8, 3


def parse_case(text: str) -> tuple[str, int, bool]:
    name, accum, *local = text.split(":")
    return name, int(accum), local == ["local"]


def train_case(accelerator: Accelerator, model_name: str, accum: int, local_loss: bool) -> dict:
    world, rank = accelerator.num_processes, accelerator.process_index
    per_process = GLOBAL_BATCH // world
    recipe = Recipe(steps=STEPS, batch_size=per_process // accum, accum=accum, lr=1e-3, warmup_steps=1,
                    local_loss=local_loss)
    set_seed(0)
    # float64: the test is of the arithmetic (gathering, accumulation); in fp32 Adam's normalised update
    # amplifies summation-order noise of near-zero gradients to ~1e-4, which would hide a real bug's size.
    model = towers.create_model(model_name).double()
    ddp_model, optimizer = accelerator.prepare(model, build_optimizer(model, recipe))
    settings = device_settings(accelerator.device, ddp_model)
    step = ContrastiveStep(accelerator, ddp_model, optimizer, recipe)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for index in range(STEPS):
        images = torch.randn(GLOBAL_BATCH, 3, 64, 64, generator=generator, dtype=torch.float64)
        tokens = torch.randint(1, 49000, (GLOBAL_BATCH, 77), generator=generator)
        tokens[:, 0], tokens[:, 12], tokens[:, 13:] = 49406, 49407, 0  # SOT ... EOT, padding
        mine = slice(rank * per_process, (rank + 1) * per_process)
        micro = [(i, t) for i, t in zip(images[mine].chunk(accum), tokens[mine].chunk(accum), strict=True)]
        losses.append(step(micro, index)["loss"].item())
    accelerator.free_memory()  # drops the prepared model and optimizer before the next case
    # the next case trains a model of its own: no copy of the state dict
    return {"losses": losses, "state_dict": model.state_dict(), "ddp": settings["ddp"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="transformer+mixer-tiny")
    parser.add_argument("--case", action="append", type=parse_case, required=True,
                        help="NAME:ACCUM or NAME:ACCUM:local (local loss); repeatable")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True, kwargs_handlers=[ddp_options()])  # train.py's DDP settings
    cases = {name: train_case(accelerator, args.model, accum, local) for name, accum, local in args.case}
    if accelerator.is_main_process:
        torch.save({"cases": cases, "world": accelerator.num_processes,
                    "distributed_type": str(accelerator.distributed_type)}, args.out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    run_main(main)  # an entry point like the product's: exits without the final collection
