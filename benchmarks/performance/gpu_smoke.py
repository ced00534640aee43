"""The GPU smoke: one command that retires the risks one GPU can, before a 16-GPU LAION job is launched.

    python -m benchmarks.performance.gpu_smoke --out DIR  # one CUDA GPU: ~6-10 minutes, DIR/gpu_smoke.json
    python -m benchmarks.performance.gpu_smoke --out DIR  # no GPU: the CPU-meaningful stages at tiny size

Stages, in order (each records `status`: ran / skipped with `why`; docs/gpu_path.md, "GPU smoke"):
environment (driver, CUDA, NCCL, bf16, /dev/shm, cores); shards (synthetic 256 px JPEG shards);
decoder_race (torchvision's CUDA decode_jpeg on the caller's stream against `DeviceDecoder`'s: corrupted
batches of each); training (the committed LAION recipe through the sbatch's launcher, one process, each
tower, a checkpoint and an in-training eval); preemption (SIGUSR1 mid-run, exit 75, `--resume auto`,
losses against the uninterrupted run); decode_throughput (`DeviceDecoder` against PIL on one core);
host_syncs (torch.cuda.set_sync_debug_mode around the real loop); pytest_gpu (`pytest -m gpu`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.data.files import REPO_ROOT
from benchmarks.data.jpeg_shards import make_image, write_jpeg_shards
from benchmarks.provenance import fail, git_commit, library_versions, write_json
from launch.faults import PREEMPTED_EXIT_STATUS
from runfolder import LATEST, RunFolder
from runfolder.errors import OneLineParser, run_main
from runfolder.records import is_eval_line

RECIPE = REPO_ROOT / "launch" / "configs" / "laion400m-b32.yaml"
SHARED_IMAGENET = REPO_ROOT.parent / "shared" / "data" / "imagenet_samples"  # 1,000 ILSVRC val images
TOWERS = ("mixer", "transformer")
# Sizes: on a GPU the comparison's own step (B/32, batch 256) for ~120 steps; on CPU the least that
# exercises each stage.
GPU_SIZE = {"variant": "B/32", "batch": 256, "steps": 120, "every": 60, "samples": 8192, "side": 256}
CPU_SIZE = {"variant": "tiny", "batch": 8, "steps": 6, "every": 2, "samples": 64, "side": 64}
LOSS_CLOSE = 0.05  # resumed vs uninterrupted, relative: bf16, cuBLAS and SDPA are not deterministic


def environment(device: torch.device) -> dict[str, Any]:
    shm = shutil.disk_usage("/dev/shm") if Path("/dev/shm").is_dir() else None
    env = {"status": "ran", "device": str(device), "torch": torch.__version__, "git_commit": git_commit(),
           "versions": library_versions(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "dev_shm_gib": None if shm is None else shm.total / 2**30, "cuda": torch.version.cuda}
    if device.type == "cuda":
        smi = shutil.which("nvidia-smi")
        query = [smi, "--query-gpu=driver_version", "--format=csv,noheader"] if smi else None
        driver = subprocess.run(query, capture_output=True, text=True).stdout.strip() if query else None
        env.update(gpu=torch.cuda.get_device_name(device), bf16=torch.cuda.is_bf16_supported(),
                   nccl=".".join(map(str, torch.cuda.nccl.version())), driver=driver,
                   memory_gib=torch.cuda.get_device_properties(device).total_memory / 2**30)
    return env


def decoder_race(device: torch.device, iterations: int, side: int) -> dict[str, Any]:
    """Corrupted iterations of the bare CUDA decode (torchvision's, on the caller's stream) and of
    `DeviceDecoder`'s: each iteration fills `victims` with a known value, queues a long kernel and then
    one sum per victim, frees the victims while their sums are still queued, decodes a batch of JPEGs
    of the victims' size, and checks the sums. A decode that writes into a freed block before the
    queued sums read it changes a sum (pytorch/vision#9606)."""
    if device.type != "cuda":
        return {"status": "skipped", "why": "the race is between CUDA streams: it needs a CUDA device"}
    import numpy as np

    from launch.decoders import DeviceDecoder, decode_batch

    rng = np.random.default_rng(0)
    jpegs = [torch.frombuffer(bytearray(make_image(rng, side)), dtype=torch.uint8) for _ in range(8)]
    fixed = DeviceDecoder(side, device)
    decoders = {"bare": lambda: decode_batch(jpegs, device), "fixed": lambda: fixed._decode(jpegs)}
    result = {"status": "ran", "iterations": iterations, "batch": len(jpegs)}
    for name, decode in decoders.items():
        corrupted = 0
        for _ in range(iterations):
            victims = [torch.full((3, side, side), 7, dtype=torch.uint8, device=device) for _ in jpegs]
            torch.cuda.synchronize(device)
            torch.cuda._sleep(50_000_000)  # ~30 ms of one SM: the host runs ahead, as in training
            sums = [victim.sum(dtype=torch.int64) for victim in victims]
            del victims
            decode()
            torch.cuda.synchronize(device)
            corrupted += any(int(total) != 7 * 3 * side * side for total in sums)
        result[f"corrupted_{name}"] = corrupted
    result["fix_holds"] = result["corrupted_fixed"] == 0
    return result


def _launch(run: str, tower: str, args: argparse.Namespace, size: dict, extra: list[str]) -> subprocess.Popen:
    """launch/train.py through the sbatch's own launcher (`python -m accelerate.commands.launch` with the
    multinode config), one machine, one process; its output to runs/RUN.log."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO_ROOT / "launch" / "accelerate" / "multinode.yaml"), "--num_machines", "1",
                "--num_processes", "1", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
                "--main_process_port", str(port)]
    evals = (["--imagenet-val", str(args.imagenet_val), "--eval-templates", "simple"] if args.imagenet_val
             else ["--evals", "toy"])
    train = ["launch/train.py", "--config", str(RECIPE), "--tower", tower, "--variant", size["variant"],
             "--train-data", args.spec, "--batch-size", str(size["batch"]), "--steps", str(size["steps"]),
             "--warmup-steps", str(size["every"]), "--save-every", str(size["every"]),
             "--eval-every", str(size["every"]), "--eval-samples", str(4 * size["batch"]),
             "--log-every", str(max(1, size["every"] // 6)), "--workers", str(args.workers), *evals,
             "--runs-dir", str(args.out / "runs"), "--name", run, *extra]
    # as the sbatch exports them: torchrun's agent forwards SIGUSR1 and waits for the checkpoint
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
           "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "110"}
    log = (args.out / "runs" / f"{run}.log").open("a")
    return subprocess.Popen(launcher + train, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, timeout: float) -> int | None:
    """The exit status, or None (and the run killed) past `timeout` seconds."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def _trained(run_dir: Path) -> list[dict]:
    run = RunFolder(run_dir)
    return [line for line in run.read_metrics() if "loss" in line] if run.metrics.exists() else []


def training_run(tower: str, args: argparse.Namespace, size: dict) -> dict[str, Any]:
    started = time.perf_counter()
    code = _wait(_launch(f"smoke-{tower}", tower, args, size, []), args.run_timeout)
    run_dir = args.out / "runs" / f"smoke-{tower}"
    lines = RunFolder(run_dir).read_metrics() if RunFolder(run_dir).metrics.exists() else []
    steps = [line for line in lines if "loss" in line]
    steady = steps[1:] or steps  # the first interval holds start-up
    evals = [line for line in lines if is_eval_line(line)]
    result = {"status": "ran" if code == 0 else "failed", "exit": code,
              "wall_s": time.perf_counter() - started, "log": str(run_dir) + ".log",
              "steps": steps[-1]["step"] if steps else 0,
              "checkpoints": sorted(p.name for _, p in RunFolder(run_dir).step_files()),
              "eval_steps": [line["step"] for line in evals]}
    if steady:
        result.update(final_loss=steps[-1]["loss"],
                      samples_per_s=statistics.median(line["samples_per_s"] for line in steady),
                      data_wait_frac=statistics.median(line["data_wait_frac"] for line in steady),
                      peak_memory_gib=max((line["max_memory_gib"] for line in steps
                                           if "max_memory_gib" in line), default=None))  # CUDA only
    return result


def preemption(args: argparse.Namespace, size: dict, reference: dict) -> dict[str, Any]:
    """SIGUSR1 to the launcher past the first checkpoint step. The run must stop with the marker the
    sbatch requeues on (preempted.json; the launcher's own status is torchrun's, not the run's 75) and
    `latest` at that step; `--resume auto` then finishes, its losses compared with the uninterrupted
    run's."""
    if reference.get("status") != "ran":
        return {"status": "skipped", "why": "the uninterrupted run it is compared with did not run"}
    run_dir = args.out / "runs" / "smoke-preempted"
    first = _launch("smoke-preempted", "mixer", args, size, ["--resume", "auto"])
    deadline = time.time() + args.run_timeout
    while max((line["step"] for line in _trained(run_dir)), default=0) <= size["every"]:
        if first.poll() is not None or time.time() > deadline:
            first.kill()
            return {"status": "failed", "why": f"the run ended (exit {first.poll()}) before the signal"}
        time.sleep(0.05)
    first.send_signal(signal.SIGUSR1)
    stopped_exit = _wait(first, args.run_timeout)
    marker = RunFolder(run_dir).preempted
    stopped = json.loads(marker.read_text())["step"] if marker.exists() else None
    latest = RunFolder(run_dir).checkpoints / LATEST
    latest_at_stop = latest.read_text().strip() if latest.exists() else None
    resumed_exit = _wait(_launch("smoke-preempted", "mixer", args, size, ["--resume", "auto"]),
                         args.run_timeout)
    ours = {line["step"]: line["loss"] for line in _trained(run_dir)}
    theirs = {line["step"]: line["loss"] for line in _trained(args.out / "runs" / "smoke-mixer")}
    after = [step for step in sorted(ours) if stopped is not None and step > stopped and step in theirs]
    worst = max((abs(ours[s] - theirs[s]) / abs(theirs[s]) for s in after), default=None)
    said = _preempted_line(args.out / "runs" / "smoke-preempted.log")
    ok = (stopped is not None and latest_at_stop == f"step_{stopped:08d}.pt" and stopped_exit != 0
          and f"exit status {PREEMPTED_EXIT_STATUS}" in (said or "") and resumed_exit == 0
          and worst is not None and worst <= LOSS_CLOSE)
    return {"status": "ran" if ok else "failed", "stopped_exit": stopped_exit, "stopped_at_step": stopped,
            "latest_at_stop": latest_at_stop, "run_said": said,
            "resumed_exit": resumed_exit, "compared_steps": after, "max_relative_loss_diff": worst,
            "tolerance": LOSS_CLOSE}


def _preempted_line(log: Path) -> str | None:
    """The run's own one-line account of the stop (it names exit status 75)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("preempted:")]
    return lines[-1] if lines else None


def decode_throughput(device: torch.device, side: int, batch: int, batches: int) -> dict[str, Any]:
    """`DeviceDecoder` (nvJPEG on CUDA) on whole batches against PIL + open_clip's train transform on one
    core, the same JPEGs; the worker's share of the device path (header, box, bytes) is not timed."""
    import numpy as np
    from open_clip.transform import image_transform

    from benchmarks.data.shards import load_rgb
    from launch.decoders import DeviceDecoder, WorkerDecoder, one_thread, pack_device_batch

    size = min(224, side - 16)
    transform = image_transform(size, is_train=True)
    rng = np.random.default_rng(1)
    jpegs = [make_image(rng, side) for _ in range(batch)]
    worker, decoder = WorkerDecoder("device", transform), DeviceDecoder(size, device)
    packed = pack_device_batch(*map(list, zip(*[worker(data) for data in jpegs], strict=True)))
    decoder(packed)  # warm-up: nvJPEG's handle and buffers
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(batches):
        decoder(packed)
    sync()
    device_rate = batch * batches / (time.perf_counter() - started)
    with one_thread():
        started = time.perf_counter()
        for data in jpegs:
            transform(load_rgb(data))
        pil_rate = batch / (time.perf_counter() - started)
    return {"status": "ran", "device": str(device), "image_side": side, "crop": size, "batch": batch,
            "device_samples_per_s": device_rate, "pil_samples_per_s_one_core": pil_rate,
            "pil_cores_replaced": device_rate / pil_rate}


def host_syncs(args: argparse.Namespace, size: dict, device: torch.device) -> dict[str, Any]:
    """Run the real training loop in this process (`launch/train.py`'s main) under
    torch.cuda.set_sync_debug_mode("warn") and count the synchronising calls, by source line."""
    if device.type != "cuda":
        return {"status": "skipped", "why": "set_sync_debug_mode reports CUDA synchronisations only"}
    from launch import train

    steps = 2 * size["every"]
    argv = ["--config", str(RECIPE), "--tower", "mixer", "--variant", size["variant"], "--train-data",
            args.spec, "--batch-size", str(size["batch"]), "--steps", str(steps), "--log-every", "10",
            "--save-every", "0", "--eval-every", "0", "--evals", "", "--workers", str(args.workers),
            "--runs-dir", str(args.out / "runs"), "--name", "smoke-syncs"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            code = train.main(argv)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    where: dict[str, int] = {}
    for w in syncs:
        key = f"{Path(w.filename).name}:{w.lineno}"
        where[key] = where.get(key, 0) + 1
    return {"status": "ran" if code == 0 else "failed", "exit": code, "steps": steps, "syncs": len(syncs),
            "syncs_per_step": len(syncs) / steps,
            "by_line": dict(sorted(where.items(), key=lambda kv: -kv[1]))}


def pytest_gpu(device: torch.device, timeout: float) -> dict[str, Any]:
    if device.type != "cuda":
        return {"status": "skipped", "why": "every test marked gpu skips without a CUDA device"}
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-n", "0", "-p",
                               "no:cacheprovider", "tests"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"timed out after {timeout:.0f} s"}
    return {"status": "ran" if done.returncode == 0 else "failed", "exit": done.returncode,
            "summary": done.stdout.strip().splitlines()[-1:], "tail": done.stdout[-3000:],
            "wall_s": time.perf_counter() - started}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.performance.gpu_smoke",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_smoke.json, shards and runs")
    parser.add_argument("--imagenet-val", type=Path, default=None,
                        help="the in-training eval's ImageNet folder (default on a GPU: the shared "
                             "1,000 samples if present; otherwise the toy set)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default: the recipe's 8 on a GPU, 1 on CPU)")
    parser.add_argument("--skip", default="", help="comma-separated stages not to run (recorded as skipped)")
    parser.add_argument("--run-timeout", type=float, default=None,
                        help="seconds per launched run (default: 300 on a GPU, 1800 on CPU)")
    parser.add_argument("--budget-s", type=float, default=570,  # a 10-minute device command, less 30 s
                        help="the whole smoke's limit: pytest -m gpu gets what is left "
                             "(default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = GPU_SIZE if device.type == "cuda" else CPU_SIZE
    args.workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 1)
    if args.run_timeout is None:
        # GPU: start-up ~30 s + 120 B/32 steps ~15-30 s + two ~1.8 GB checkpoints + two evals ~90 s in
        # all, so 300 s is ~3x; CPU: a tiny run took 360-390 s on the shared 2-core machine
        args.run_timeout = 300.0 if device.type == "cuda" else 1800.0
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if args.imagenet_val is None and device.type == "cuda" and SHARED_IMAGENET.is_dir():
        args.imagenet_val = SHARED_IMAGENET  # on CPU the 1000-class classifier alone takes minutes
    if args.imagenet_val is not None and not args.imagenet_val.is_dir():
        fail(f"--imagenet-val {args.imagenet_val}: no such directory; expected an ILSVRC val folder")
    args.out = args.out.resolve()
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"device": str(device), "size": size, "command": " ".join(sys.argv)}

    def stage(name: str, run) -> dict[str, Any]:
        if name in skip:
            result[name] = {"status": "skipped", "why": "--skip"}
        else:
            began = time.perf_counter()
            result[name] = {**run(), "stage_s": time.perf_counter() - began}
            print(f"gpu_smoke: {name}: {result[name]['status']} ({result[name]['stage_s']:.0f} s)",
                  flush=True)
        write_json(args.out / "gpu_smoke.json", result)  # as it goes: a killed smoke keeps its stages
        return result[name]

    stage("environment", lambda: environment(device))
    args.spec = write_jpeg_shards(args.out / "shards", size["samples"], side=size["side"],
                                  processes=min(8, os.cpu_count() or 1))
    result["shards"] = {"status": "ran", "spec": args.spec, "samples": size["samples"], "side": size["side"]}
    stage("decoder_race", lambda: decoder_race(device, 50, size["side"]))
    for tower in TOWERS:
        stage(f"training_{tower}", lambda tower=tower: training_run(tower, args, size))
    stage("preemption", lambda: preemption(args, size, result["training_mixer"]))
    stage("decode_throughput", lambda: decode_throughput(device, size["side"], size["batch"], 10))
    stage("host_syncs", lambda: host_syncs(args, size, device))
    left = args.budget_s - (time.perf_counter() - started)
    stage("pytest_gpu", lambda: pytest_gpu(device, max(60.0, left)))
    result["wall_s"] = time.perf_counter() - started
    result["failed"] = sorted(name for name, value in result.items()
                              if isinstance(value, dict) and value.get("status") == "failed")
    path = write_json(args.out / "gpu_smoke.json", result)
    print(f"gpu_smoke: {result['wall_s']:.0f} s, failed: {result['failed'] or 'none'}; {path}")
    return result


if __name__ == "__main__":
    run_main(main, status=lambda result: 1 if result["failed"] else 0)
