"""The faults of a cluster job (launch/faults.py): a stalled shard, a full disk at a checkpoint, stop
signals to one worker and to the launcher, a dead process, a killed DataLoader worker, GPUs asked for
but unusable, the deadlines' sizes. Each test prints what docs/training-at-scale.md's "Faults" table
reports (time to exit, steps lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from session_runs import KILL_AND_RESUME, uninterrupted_run
from test_multinode import TINY, free_port, node_env
from test_train_loader import take, write_dataset

from benchmarks.data.shards import SkipCounts, iter_shard
from benchmarks.data.timed_read import ShardStalled, TimedStream
from launch.config import RunOptions
from launch.data import get_train_loader
from launch.faults import (
    PREEMPTED_EXIT_STATUS,
    failure_line,
)
from runfolder import CHECKPOINTS, RunFolder, checkpoint_name

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


def _weights(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / CHECKPOINTS / checkpoint_name(step), weights_only=True)["state_dict"]


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _losses(run_dir: Path) -> list[float]:
    """The loss of every step in order (a step logged again after a resume counts once)."""
    return list({line["step"]: line["loss"] for line in RunFolder(run_dir).read_metrics() if "loss" in line}
                .values())


def _logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


def _wait_for(condition, process: subprocess.Popen, what: str, limit: float = 300) -> None:
    deadline = time.time() + limit
    while not condition():
        assert process.poll() is None and time.time() < deadline, f"run ended before {what}"
        time.sleep(0.02)


def _workers_of(launcher: subprocess.Popen) -> dict[int, psutil.Process]:
    """rank -> training process started by an `accelerate launch` (its children, not their forked
    DataLoader workers, which share their command line and environment)."""
    found = {}
    for child in psutil.Process(launcher.pid).children():
        try:
            if "launch/train.py" in " ".join(child.cmdline()) and "RANK" in child.environ():
                found[int(child.environ()["RANK"])] = child
        except psutil.Error:
            pass
    return found


# ---------------------------------------------------------------- a stalled shard


def test_a_stalled_pipe_is_abandoned_after_the_timeout_and_its_command_killed():
    stream = TimedStream(subprocess.Popen(["sh", "-c", "printf abc; exec sleep 60"],
                                          stdout=subprocess.PIPE).stdout, timeout=0.5, name="sleeper")
    assert stream.read(3) == b"abc"
    start = time.perf_counter()
    with pytest.raises(ShardStalled, match="sleeper: no data for 0.5 s"):
        stream.read(1)
    assert 0.5 <= time.perf_counter() - start < 2.0


def test_a_child_gone_before_its_kill_does_not_spare_the_rest_of_the_command(monkeypatch):
    # The race the suite met under load: `head -c N` of `pipe:head -c N shard; exec sleep 60` exits
    # between the listing of the command's processes and its kill; that kill's NoSuchProcess must not
    # end the loop, or the sleeper survives and closing the pipe waits the full 60 s.
    import webdataset as wds

    stream = TimedStream(wds.gopen("pipe:printf abc; sleep 60 & exec sleep 60", "rb"), timeout=0.5,
                         name="family")
    assert stream.read(3) == b"abc"
    family = psutil.Process(stream.source.proc.pid)
    deadline = time.perf_counter() + 10  # the shell may print before it forks its background sleep
    while not family.children(recursive=True) and time.perf_counter() < deadline:
        time.sleep(0.01)
    members = [*family.children(recursive=True), family]
    original, calls = psutil.Process.kill, []

    def kill(self):  # the first member dies on its own just before its kill: psutil says NoSuchProcess
        calls.append(self.pid)
        original(self)
        if len(calls) == 1:
            raise psutil.NoSuchProcess(self.pid)

    monkeypatch.setattr(psutil.Process, "kill", kill)
    start = time.perf_counter()
    with pytest.raises(ShardStalled):
        stream.read(1)
    stream.close()
    seconds = time.perf_counter() - start
    _, alive = psutil.wait_procs(members, timeout=5)
    assert len(members) == 2 and calls[:2] == [m.pid for m in members] and not alive, (calls, alive)
    assert seconds < 5.0, f"closing the stalled pipe took {seconds:.1f} s"


def test_closing_a_pipe_before_its_end_kills_the_command_even_when_the_reader_is_not_blocked(monkeypatch):
    # The second race the suite met under load: the stream is closed while its reading thread is
    # between two reads, so the thread leaves its loop by itself; closing the pipe then waited for the
    # command (`exec sleep 60`) unless the command is killed whatever the thread's state.
    import webdataset as wds

    original, calls = TimedStream._read_some, []

    def read_some(self):  # the second read returns data only once the consumer has closed the stream
        calls.append(1)
        if len(calls) == 1:
            return original(self)
        self._closed.wait()
        return b"late"

    monkeypatch.setattr(TimedStream, "_read_some", read_some)
    stream = TimedStream(wds.gopen("pipe:printf abc; exec sleep 60", "rb"), timeout=30, name="early")
    assert stream.read(3) == b"abc"
    command = psutil.Process(stream.source.proc.pid)
    start = time.perf_counter()
    stream.close()
    seconds = time.perf_counter() - start
    assert seconds < 5.0, f"closing the pipe took {seconds:.1f} s"
    assert not stream._thread.is_alive() and not command.is_running()


def test_a_stalled_pipe_shard_is_skipped_counted_as_timeout_and_the_stream_resumes_exactly(tmp_path):
    spec, _ = write_dataset(tmp_path, shards=3, per_shard=12)
    stalled = tmp_path / "00002.tar"
    half = stalled.stat().st_size // 2 // 512 * 512  # some whole members, then the bytes stop
    spec = spec.replace("{00000..00002}", "{00000..00001}")
    spec += f"::pipe:head -c {half} {stalled}; exec sleep 60"

    counts = SkipCounts()  # the reader alone: members before the stall, then `timeout`, within 1.5 s
    start = time.perf_counter()
    members = list(iter_shard(spec.split("::")[-1], counts, read_timeout=0.5))
    skip_s = time.perf_counter() - start
    print(f"stalled pipe shard: {len(members)} members kept, abandoned after {skip_s:.2f} s (timeout 0.5 s)")
    assert 0 < len(members) < 12 and counts["timeout"] == 1 and skip_s < 1.5

    make = dict(image_size=16, batch_size=4, workers=0, seed=0, shuffle_buffer=8, shard_read_timeout=0.5)
    loader = get_train_loader(spec, **make)
    batches, it = [], iter(loader)
    while loader.skipped()["timeout"] < 2 and len(batches) < 60:  # the shard is drawn again and again
        batches.append(next(it))
    assert loader.skipped()["timeout"] >= 2 and loader.skipped()["truncated_tar"] == 0
    state = loader.state_dict()
    after = [next(it) for _ in range(6)]
    start = time.perf_counter()  # the buffer holds samples of the stalled pipe: they are read again
    resumed = take(get_train_loader(spec, state=state, **make), 6)
    resume_s = time.perf_counter() - start
    print(f"resumed 6 batches in {resume_s:.1f} s (the stalled command sleeps 60 s)")
    assert resume_s < 30, "the resume waited for the stalled pipe's command to end"
    for (images, tokens), (images_r, tokens_r) in zip(after, resumed, strict=True):
        assert torch.equal(images, images_r) and torch.equal(tokens, tokens_r)


# ---------------------------------------------------------------- a full disk: tests/test_faults_full_disk.py


# ---------------------------------------------------------------- stop signals


def _launch_two(runs: Path, name: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """2 gloo processes on this machine (launch/accelerate/cpu.yaml), output to runs/NAME.log."""
    runs.mkdir(exist_ok=True)
    return subprocess.Popen(
        [*LAUNCH, "--config_file", str(REPO / "launch" / "accelerate" / "cpu.yaml"), "--main_process_port",
         str(free_port()), "launch/train.py", *TINY, "--steps", "12", "--save-every", "6",
         "--runs-dir", str(runs), "--name", name, *extra],
        cwd=REPO, env=env or node_env(), stdout=(runs / f"{name}.log").open("a"), stderr=subprocess.STDOUT)


def _stop(launcher: subprocess.Popen, run_dir: Path, after_step: int, send) -> tuple[float, int]:
    """Wait for step `after_step`, `send(launcher)`; (seconds from the signal to the launcher's exit,
    the step the run stopped at)."""
    _wait_for(lambda: max(_logged_steps(run_dir), default=0) >= after_step, launcher, f"step {after_step}")
    start = time.perf_counter()
    send(launcher)
    marker = run_dir / "preempted.json"
    while not marker.exists() and launcher.poll() is None:
        time.sleep(0.02)
    saved = time.perf_counter() - start
    launcher.wait(timeout=300)
    print(f"signal to checkpoint and marker: {saved:.1f} s; ", end="")
    return time.perf_counter() - start, json.loads(marker.read_text())["step"]


@pytest.mark.slow
def test_sigterm_to_one_worker_and_sigusr1_to_the_launcher_stop_all_at_one_step_losing_nothing(tmp_path):
    runs = tmp_path / "runs"
    full = _launch_two(runs, "full")
    assert full.wait(timeout=600) == 0, (runs / "full.log").read_text()[-3000:]

    run_dir = runs / "stopped"
    env = {**node_env(), "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"}
    first = _launch_two(runs, "stopped", "--resume", "auto", env=env)  # SIGTERM to rank 1 only
    seconds, step = _stop(first, run_dir, 3, lambda p: _workers_of(p)[1].send_signal(signal.SIGTERM))
    log = (runs / "stopped.log").read_text().splitlines()
    lines = [line for line in log if line.startswith("preempted:")]
    print(f"SIGTERM to rank 1 at step >= 3: stopped at step {step}, launcher exit {first.returncode} after "
          f"{seconds:.1f} s; {lines}")
    assert first.returncode != 0 and len(lines) == 1 and f"stopped at step {step}" in lines[0]
    assert f"exit status {PREEMPTED_EXIT_STATUS}" in lines[0] and "(SIGTERM)" not in lines[0]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{step:08d}.pt"
    assert max(_logged_steps(run_dir)) == step, "a step trained after the checkpoint would be lost"
    assert step < 12

    # SIGUSR1 past step 6, so this resumed launch writes step 6's checkpoint, compared below with the
    # uninterrupted run's (a third launch to step 12 would cost a launch and test the same resume again)
    again = _launch_two(runs, "stopped", "--resume", "auto", env=env)  # SIGUSR1 to the launcher
    seconds, step2 = _stop(again, run_dir, max(step + 2, 7), lambda p: p.send_signal(signal.SIGUSR1))
    print(f"SIGUSR1 to the launcher at step >= {max(step + 2, 7)}: stopped at step {step2}, launcher exit "
          f"{again.returncode} after {seconds:.1f} s")
    assert again.returncode != 0 and step < step2 < 12 and max(_logged_steps(run_dir)) == step2
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{step2:08d}.pt"
    diff = _max_diff(_weights(runs / "full", 6), _weights(run_dir, 6))
    losses = [_losses(runs / "full")[:step2], _losses(run_dir)]
    print(f"stopped at step {step} and resumed vs uninterrupted, step 6: max param diff {diff}; losses of "
          f"steps 1-{step2} equal: {losses[0] == losses[1]}")
    assert diff == 0.0 and losses[0] == losses[1]


# ---------------------------------------------------------------- a dead process


def _two_nodes(args: list[str]) -> list[subprocess.Popen]:
    """Two `accelerate launch` "nodes" of one process each (multinode.yaml, 127.0.0.1); node 0's
    output lines are collected with the time each arrived (`node.lines`)."""
    port = free_port()
    nodes = [subprocess.Popen(
        [*LAUNCH, "--config_file", str(REPO / "launch" / "accelerate" / "multinode.yaml"), "--num_machines",
         "2", "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
         "--main_process_port", str(port), "launch/train.py", *args],
        cwd=REPO, env=node_env(), stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
        stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    nodes[0].lines = []

    def collect(node: subprocess.Popen) -> None:
        node.lines.extend((time.perf_counter(), line) for line in node.stdout)

    threading.Thread(target=collect, args=(nodes[0],), daemon=True).start()
    return nodes


def _first_error(node: subprocess.Popen, since: float) -> tuple[float | None, list[str]]:
    errors = [(at, line) for at, line in node.lines if line.startswith("error:")]
    return (errors[0][0] - since if errors else None), [line.strip() for _, line in errors]


@pytest.mark.slow
def test_kill_9_of_one_of_two_nodes_ends_the_other_in_bounded_time_and_resume_auto_continues(tmp_path):
    runs = tmp_path / "runs"
    # the default deadline (600 s): a dead process must end the job through its launcher, not the deadline
    args = [*TINY, "--steps", "8", "--save-every", "3", "--runs-dir", str(runs), "--name", "dead", "--resume",
            "auto"]
    nodes = _two_nodes(args)
    latest = runs / "dead" / "checkpoints" / "latest"
    _wait_for(lambda: latest.exists() and latest.read_text().strip() == "step_00000003.pt", nodes[0],
              "the step-3 checkpoint")
    victim = _workers_of(nodes[1])[1]
    start = time.perf_counter()
    victim.send_signal(signal.SIGKILL)
    codes = [node.wait(timeout=120) for node in nodes]
    seconds = time.perf_counter() - start
    said_at, errors = _first_error(nodes[0], start)
    print(f"kill -9 of rank 1: rank 0's line after {said_at:.1f} s, both launchers exited {codes} after "
          f"{seconds:.1f} s; rank 0 said: {errors}")
    assert codes[0] != 0 and codes[1] != 0 and seconds < 60  # within a minute, far below the deadline
    assert RunOptions().collective_timeout >= 600 and "--collective-timeout 600 s" in errors[0]
    assert len(errors) == 1 and "process 0: a collective failed" in errors[0], errors
    assert not (runs / "dead" / "checkpoints" / "step_00000008.pt").exists(), "killed too late"

    resumed = subprocess.run(
        [*LAUNCH, "--config_file", str(REPO / "launch" / "accelerate" / "cpu.yaml"), "--main_process_port",
         str(free_port()), "launch/train.py", *args], cwd=REPO, env=node_env(), capture_output=True,
        text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    config = json.loads((runs / "dead" / "config.json").read_text())
    assert Path(config["resumed_from"]).name in ("step_00000003.pt", "step_00000006.pt")
    assert json.loads((runs / "dead" / "final_eval.json").read_text())["step"] == 8


@pytest.mark.slow
def test_a_hung_process_ends_the_others_after_the_collective_timeout(tmp_path):
    # SIGSTOP: the process is alive and its sockets open, so only the deadline can end the wait (a
    # node lost without a word looks the same). Its own launcher waits on; SLURM's srun
    # --kill-on-bad-exit=1 ends it once node 0 exits non-zero, here the test does.
    args = [*TINY, "--steps", "30", "--collective-timeout", "10", "--runs-dir", str(tmp_path),
            "--name", "hung"]
    nodes = _two_nodes(args)
    _wait_for(lambda: max(_logged_steps(tmp_path / "hung"), default=0) >= 2, nodes[0], "step 2")
    victim = _workers_of(nodes[1])[1]
    start = time.perf_counter()
    victim.suspend()
    try:
        code = nodes[0].wait(timeout=120)
        seconds = time.perf_counter() - start
    finally:
        victim.kill()
        nodes[1].kill()
    said_at, errors = _first_error(nodes[0], start)
    print(f"SIGSTOP of rank 1 (--collective-timeout 10): rank 0's line after {said_at:.1f} s, its launcher "
          f"exited {code} after {seconds:.1f} s: {errors}")
    assert code != 0 and 10 <= said_at < 10 + 15 and len(errors) == 1, errors
    assert "process 0: a collective failed" in errors[0]


# ---------------------------------------------------------------- a killed DataLoader worker


def test_a_worker_killed_with_its_batch_in_flight_is_named_like_any_killed_worker(tmp_path, monkeypatch):
    # The race the end-to-end test below can lose: the worker dies after queueing a batch and before
    # the trainer has received its shared memory, so the receive fails with a connection error while
    # torch does not yet see the worker dead. It must still end in the one named line.
    import multiprocessing

    import launch.data

    victim = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    victim.start()

    class Receiving:  # the DataLoader's iterator, at the moment the receive fails
        _workers = [victim]

        def __iter__(self):
            return self

        def __next__(self):
            os.kill(victim.pid, signal.SIGKILL)  # not yet reaped: is_alive() may still say True
            raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(launch.data, "DataLoader", lambda *args, **kwargs: Receiving())
    spec, _ = write_dataset(tmp_path / "data")
    loader = get_train_loader(spec, image_size=16, batch_size=8, workers=1, seed=0, shuffle_buffer=20)
    with pytest.raises(RuntimeError) as raised:
        take(loader, 1)
    line = failure_line(raised.value, 0, loader.worker_pids, 600, "resume hint")
    assert line == (f"DataLoader worker 0 (pid {victim.pid}) of process 0 was killed by signal SIGKILL "
                    "(SIGKILL: often the kernel's OOM killer; give it more memory or fewer --workers); "
                    "resume hint")
    assert isinstance(raised.value.__cause__, ConnectionResetError)

    alive = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    alive.start()
    try:  # a connection error with every worker alive, or without workers, is not theirs: raised as it came
        assert launch.data.dead_worker_error([alive], wait_s=0.2) is None
        assert launch.data.dead_worker_error([]) is None
    finally:
        alive.kill()
        alive.join()


@pytest.mark.slow
def test_a_killed_loader_worker_ends_the_run_in_one_line_and_the_resume_is_exact(tmp_path, private_cache):
    script = [sys.executable, str(REPO / "launch" / "train.py")]
    args = [*KILL_AND_RESUME, "--runs-dir", str(tmp_path)]
    full = uninterrupted_run(KILL_AND_RESUME, private_cache, node_env())

    run_dir = tmp_path / "oom"
    process = subprocess.Popen(script + args + ["--name", "oom"], env=node_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    latest = run_dir / "checkpoints" / "latest"
    _wait_for(lambda: latest.exists() and latest.read_text().strip() == "step_00000005.pt", process, "step 5")
    worker = psutil.Process(process.pid).children()[0]  # the one DataLoader worker
    start = time.perf_counter()
    worker.send_signal(signal.SIGKILL)
    err = process.communicate(timeout=120)[1]
    seconds = time.perf_counter() - start
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    print(f"kill -9 of the DataLoader worker: exit {process.returncode} after {seconds:.1f} s: {errors}")
    assert process.returncode == 1 and len(errors) == 1, err[-3000:]
    # torch names the signal when its SIGCHLD handler sees the death first, and says "exited unexpectedly"
    # when its worker watchdog does (a loaded machine): either way the line names the worker and `latest`
    named = f"DataLoader worker 0 (pid {worker.pid}) of process 0 "
    assert (named + "was killed by signal SIGKILL" in errors[0] or named + "exited unexpectedly" in errors[0])
    assert "`latest` names step_" in errors[0] and "--resume auto" in errors[0]
    assert not (run_dir / "checkpoints" / "step_00000010.pt").exists(), "killed too late to test resume"

    resumed = subprocess.run(script + args + ["--name", "oom", "--resume", "auto"], env=node_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    diff = _max_diff(_weights(full, 10), _weights(run_dir, 10))
    print(f"killed loader worker + resume vs uninterrupted, step 10: max param diff {diff}")
    assert diff == 0.0
