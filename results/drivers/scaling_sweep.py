"""The scaling-law sweep's two executors: this machine (resumable) and a SLURM array-job writer.

Both run the plan `results.scaling_spec` derives from `results/scaling/sweep.yaml`:

    python -m results.drivers.scaling_sweep run  # toy sweep here: tune, grid, check, report
    python -m results.drivers.scaling_sweep run --dry-run  # the runs it would start, and their flags
    python -m results.drivers.scaling_sweep run --jobs 2  # two chains at once, each its share of cores
    python -m results.drivers.scaling_sweep estimate  # wall time from a few timed steps per size
    python -m results.drivers.scaling_sweep slurm --out sweep-slurm/  # tune/grid/check array jobs + submit.sh
    python -m results.drivers.scaling_sweep chain --target slurm --phase grid --index 3  # one array task
    python -m results.drivers.scaling_sweep run --target plateau --out results/plateau  # the default's chains
    python -m results.drivers.scaling_sweep report --target plateau --out results/plateau  # report only

Resumable like `results.drivers.reference`: a run with `final_eval.json` is reused; a run cut short resumes
from its newest checkpoint (`--resume auto`; a branch without one starts at its trunk's branch point),
and a branch whose trunk's checkpoints are gone has its trunk trained again. Checkpoints are deleted
once every run of their chain has finished (`--keep-checkpoints` keeps them). Runs go to
`<out>/runs/`, each family's tuned lr to `<out>/lr_choice.json`, then the target's report writes
`<out>/report/` (`results.scaling_report`, or `results.plateau_report` for a `report: plateau` target;
`report` writes it again without training). Commands run as subprocesses: `results` imports no model
code.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from results.scaling_report import write_scaling_report
from results.scaling_spec import (
    DEFAULT_SPEC,
    LR_CHOICE,
    PHASES,
    PlannedRun,
    SpecError,
    Target,
    families,
    load_spec,
    plan,
    run_error,
    target,
    train_flags,
)
from runfolder import RunFolder, atomic_write_text
from runfolder.code_version import ALLOW_DIRTY_HELP, require_clean_tree
from runfolder.errors import OneLineParser, ReportInputError, run_main

REPO = Path(__file__).resolve().parents[2]


def choose_lr(spec: dict, t: Target, runs_dir: Path) -> dict:
    """Each family's lr with the lowest mean error over seeds at the tuning size's largest budget (ties:
    the smaller lr), and the whole tuning grid {family: {lr: {budget: [errors by seed]}}}."""
    chains = plan(spec, t, "tune", runs_dir)
    grid: dict[str, dict[str, dict[str, list]]] = {}
    for runs in chains:
        for run in runs[1:]:
            errors = grid.setdefault(run.family, {}).setdefault(f"{run.lr:g}", {})
            errors.setdefault(str(run.budget), []).append(run_error(runs_dir / run.name, t.metric))
    largest = str(max(t.budgets))
    best = {}
    for family, by_lr in grid.items():
        means = {lr: sum(v[largest]) / len(v[largest]) for lr, v in by_lr.items() if None not in v[largest]}
        if len(means) < len(by_lr):
            raise SpecError(f"tuning runs of {family} have not all finished in {runs_dir}")
        best[family] = float(min(means, key=lambda lr: (means[lr], float(lr))))
    return {"best_lr": best, "metric": t.metric, "budget": int(largest), "size": t.tune_size, "grid": grid}


class Executor:
    """Runs chains with a launcher: `python launch/train.py` here, `srun ... accelerate launch` on SLURM."""

    def __init__(self, t: Target, runs_dir: Path, launcher: list[str] | None, log: Path,
                 keep_checkpoints: bool = False, dry_run: bool = False, timings_file: Path | None = None,
                 jobs: int = 1):
        self.t, self.runs_dir, self.log, self.timings_file = t, runs_dir, log, timings_file
        self.launcher = launcher or [sys.executable, "launch/train.py"]
        self.keep_checkpoints, self.dry_run, self.jobs = keep_checkpoints, dry_run, jobs
        self.timings: dict[str, float] = {}
        self.lock = threading.Lock()  # timings.json is read and rewritten by every job
        self.stopping = threading.Event()  # a run failed: the other jobs start no further run
        self.shown: set[str] = set()  # --dry-run: runs printed once count as done (a reused tuning chain)
        self.env = None
        if jobs > 1 and not os.environ.get("MIXCLIP_CPU_THREADS"):
            # chains at once share the cores; each run's torch gets its share instead of all of them
            share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
            self.env = {**os.environ, "MIXCLIP_CPU_THREADS": share, "OMP_NUM_THREADS": share}

    def command(self, run: PlannedRun) -> list[str]:
        # A run cut short resumes from its newest checkpoint; a branch without one, from its branch point
        argv = train_flags(run.flags) + ["--runs-dir", str(self.runs_dir), "--name", run.name,
                                         "--resume", "auto"]
        if self.t.nodes * self.t.gpus_per_node == 1:
            return [*self.launcher, *argv]
        slurm = self.t.slurm
        config = slurm.get("accelerate_config", "launch/accelerate/multinode.yaml")
        # the launch subcommand as a module: the `accelerate` command imports all of its subcommands
        inner = (f"python -m accelerate.commands.launch --config_file {config} --num_machines $SLURM_NNODES"
                 f" --num_processes {self.t.nodes * self.t.gpus_per_node} --machine_rank $SLURM_NODEID"
                 " --main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT "
                 + shlex.join(["launch/train.py", *argv]))
        # srun passes no --cpus-per-task to its step since Slurm 22.05: without it the task gets one core
        cpus = os.environ.get("SLURM_CPUS_PER_TASK", slurm.get("cpus_per_task", 16))
        return ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1", f"--cpus-per-task={cpus}",
                "bash", "-c", inner]

    def _execute(self, run: PlannedRun) -> None:
        command = self.command(run)
        print("+", shlex.join(command), flush=True)
        if self.dry_run:
            self.shown.add(run.name)
            return
        started = time.perf_counter()
        with open(self.log, "a", encoding="utf-8") as out:
            done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        if done.returncode != 0:
            sys.exit(f"error: run {run.name} failed with exit status {done.returncode}; see {self.log}")
        with self.lock:
            self.timings[f"train {run.name}"] = time.perf_counter() - started
            if self.timings_file is not None:  # after every run, so a sweep stopped mid-way keeps its times
                _write_timings(self.timings_file, {f"train {run.name}": self.timings[f"train {run.name}"]})

    def run_chains(self, chains: list[list[PlannedRun]]) -> None:
        """A phase's chains in plan order, `jobs` of them at once (a chain's runs stay in order)."""
        if self.jobs == 1 or self.dry_run:
            for runs in chains:
                self.run_chain(runs)
            return
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(self.run_chain, runs) for runs in chains]
            try:
                for future in futures:
                    future.result()  # a failed run's SystemExit surfaces here, in plan order
            except BaseException:
                self.stopping.set()  # the chains running stop after their current run
                for future in futures:
                    future.cancel()
                raise

    def finished(self, run: PlannedRun) -> bool:
        return run.name in self.shown or RunFolder(self.runs_dir / run.name).final_eval.is_file()

    def run_chain(self, runs: list[PlannedRun]) -> None:
        by_name = {run.name: run for run in runs}
        for run in runs:
            if self.finished(run):
                continue
            if self.stopping.is_set():
                return
            if run.kind == "branch":
                needed = Path(run.flags["branch_from"])
                trunk = by_name[run.trunk]
                if self.finished(trunk) and not needed.is_file() and not self.dry_run:
                    print(f"note: {needed} is gone; training {trunk.name} again", flush=True)
                    shutil.rmtree(self.runs_dir / trunk.name)
                    self._execute(trunk)
            self._execute(run)
        if not self.keep_checkpoints and not self.dry_run and all(self.finished(r) for r in runs):
            for run in runs:  # the whole folder: a `latest` pointer left behind would name nothing
                shutil.rmtree(RunFolder(self.runs_dir / run.name).checkpoints, ignore_errors=True)


def _phase_chains(spec: dict, t: Target, phase: str, out: Path, runs_dir: Path) -> list[list[PlannedRun]]:
    best = None
    if phase != "tune":
        choice = out / LR_CHOICE
        if not choice.is_file():
            result = choose_lr(spec, t, runs_dir)
            atomic_write_text(choice, json.dumps(result, indent=2) + "\n")  # array tasks may race
        best = json.loads(choice.read_text())["best_lr"]
        foreign = {f: lr for f, lr in best.items() if lr not in t.tune_lrs}
        if foreign:  # another target's sweep folder: its lr would train this target's grid
            raise SpecError(f"{choice}: lr {foreign} is not one of target {t.name}'s lr_tuning.values "
                            f"{t.tune_lrs}; give this target its own --out")
    return plan(spec, t, phase, runs_dir, best)


def _write_timings(file: Path, timings: dict[str, float]) -> None:
    # wall seconds per run, kept across resumed sessions
    saved = json.loads(file.read_text()) if file.is_file() else {}
    atomic_write_text(file, json.dumps({**saved, **timings}, indent=2) + "\n")


def write_slurm(spec: dict, t: Target, spec_path: Path, out: Path, runs_dir: Path) -> list[Path]:
    """tune/grid/check array jobs (one array task per chain) and submit.sh chaining them with
    --dependency=afterok, so the grid starts once tuning has chosen each family's lr."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {"tune": len(plan(spec, t, "tune", runs_dir))}
    dummy = {f: 1.0 for f in families(spec)}  # chain counts do not depend on the lr
    counts.update({p: len(plan(spec, t, p, runs_dir, dummy)) for p in ("grid", "check")})
    phases = [phase for phase in PHASES if counts[phase]]  # a target without a branch check has no check
    slurm = t.slurm
    written = []
    for phase in phases:
        script = out / f"{phase}.sbatch"
        script.write_text(f"""#!/bin/bash
# {phase} phase of the scaling sweep {spec_path} (target {t.name}): one chain per array task.
# Requeue-safe: finished runs are reused, a trunk resumes from its newest checkpoint.
#SBATCH --job-name=scaling-{phase}
#SBATCH --array=0-{counts[phase] - 1}
#SBATCH --nodes={t.nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={t.gpus_per_node}
#SBATCH --cpus-per-task={slurm.get('cpus_per_task', 16)}
#SBATCH --time={slurm.get('time', '24:00:00')}
#SBATCH --requeue
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail
cd {shlex.quote(str(REPO))}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR MASTER_PORT=${{MASTER_PORT:-$((29500 + SLURM_ARRAY_TASK_ID % 1000))}}
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-8}}
python -m results.drivers.scaling_sweep chain --spec {shlex.quote(str(spec_path))} --target {t.name} \\
  --phase {phase} --index "$SLURM_ARRAY_TASK_ID" --out {shlex.quote(str(runs_dir.parent))} "$@"
""")
        written.append(script)
    submit = out / "submit.sh"
    after = "".join(f"sbatch --dependency=afterok:$tune {out / f'{phase}.sbatch'} \"$@\"\n"
                    for phase in ("grid", "check") if phase in phases)
    submit.write_text(f"""#!/bin/bash
# Submit the sweep: tuning, then the grid and the branch check once tuning has finished.
# Arguments go on to every chain (`bash submit.sh --allow-dirty`).
set -euo pipefail
tune=$(sbatch --parsable {out / 'tune.sbatch'} "$@")
{after}""")
    submit.chmod(0o755)
    return [*written, submit]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m results.drivers.scaling_sweep", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "chain", "slurm", "estimate", "report"))
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="sweep specification (YAML)")
    parser.add_argument("--target", default=None, help="target in the spec (default: toy; slurm for `slurm`)")
    parser.add_argument("--out", type=Path, default=None,
                        help="sweep folder (runs/, lr_choice.json, report/); default: results/scaling for "
                             "the toy target, results/<target> for the others")
    parser.add_argument("--phase", choices=PHASES, help="`chain`: the phase")
    parser.add_argument("--index", type=int, help="`chain`: the chain's index in its phase")
    parser.add_argument("--launcher", default=None,
                        help="command that trains (default: python launch/train.py)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep the runs' checkpoints")
    parser.add_argument("--dry-run", action="store_true", help="print the runs instead of starting them")
    parser.add_argument("--no-report", action="store_true", help="`run`: do not write the report")
    parser.add_argument("--estimate-steps", type=int, default=12, help="`estimate`: timed steps per size")
    parser.add_argument("--jobs", type=int, default=1,
                        help="`run`: chains trained at once, each run with its share of the cores "
                             "(small sizes leave cores idle in one process)")
    parser.add_argument("--allow-dirty", action="store_true", help=f"`run`, `chain`: {ALLOW_DIRTY_HELP}")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: expected a whole number >= 1")
    try:
        spec = load_spec(args.spec)
        t = target(spec, args.target or ("slurm" if args.command == "slurm" else "toy"))
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # the toy sweep's committed folder is results/scaling; every other target's, results/<target>
    out = args.out or (Path("sweep-slurm") if args.command == "slurm" else
                       REPO / "results" / ("scaling" if t.name == "toy" else t.name))
    runs_dir = out / "runs"  # for `slurm`: where the array tasks will write, on the cluster's filesystem
    launcher = shlex.split(args.launcher) if args.launcher else None
    try:
        if args.command == "slurm":
            for path in write_slurm(spec, t, args.spec.resolve(), out, runs_dir.resolve()):
                print(f"wrote {path}")
            return 0
        if args.command == "estimate":
            from results.drivers.scaling_estimate import estimate
            estimate(spec, t, out, launcher, args.estimate_steps)
            return 0
        if args.command == "report":  # the finished runs' report, nothing trained
            return write_report(spec, t, out)
        if not args.dry_run:  # `estimate` times a few steps and `slurm` writes scripts: neither commits runs
            require_clean_tree(args.allow_dirty)
        runs_dir.mkdir(parents=True, exist_ok=True)
        executor = Executor(t, runs_dir, launcher, out / "commands.log", args.keep_checkpoints, args.dry_run,
                            timings_file=None if args.dry_run else out / "timings.json", jobs=args.jobs)
        if args.command == "chain":
            if args.phase is None or args.index is None:
                parser.error("chain needs --phase and --index")
            chains = _phase_chains(spec, t, args.phase, out, runs_dir)
            if not 0 <= args.index < len(chains):
                raise SpecError(f"--index {args.index}: phase {args.phase} has chains 0-{len(chains) - 1}")
            executor.run_chain(chains[args.index])
        else:
            for phase in PHASES:
                if args.dry_run and phase != "tune":
                    best = {f: t.tune_lrs[0] for f in families(spec)}  # placeholders: nothing ran
                    chains = plan(spec, t, phase, runs_dir, best)
                else:
                    chains = _phase_chains(spec, t, phase, out, runs_dir)
                executor.run_chains(chains)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "run" and not args.dry_run and not args.no_report:
        return write_report(spec, t, out)
    return 0


def write_report(spec: dict, t: Target, out: Path) -> int:
    """The target's report of the finished runs (its `report`: the scaling laws or the plateau)."""
    try:
        if t.report == "plateau":
            # imported here: it reads run folders with pandas, which a SLURM array task that only
            # trains (`chain`) need not have
            from results.plateau_report import write_plateau_report

            result = write_plateau_report(spec, t, out)
            print(f"wrote {result['report_json']}")
        else:
            result = write_scaling_report(spec, t, out)
            print(result["verdict"])
    except (SpecError, ReportInputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result['report_md']}")
    return 0


if __name__ == "__main__":
    run_main(main)
