"""Every entry point reports bad input alike: one `error: ` line on stderr and exit status 2, no usage dump.

The entry points are found in the source tree (every module of towers/, benchmarks/, launch/, results/ and
runfolder/ with a `__main__` guard), so a new one is covered without editing this file. Each one's `main`
is called in this process with a flag no parser knows (a Python start per module would cost ~4 s each).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from runfolder.errors import InputError, OneLineParser, run_main

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("towers", "benchmarks", "launch", "results", "runfolder")
BAD_FLAG = "--no-such-flag"
# Forwards every flag but --model to CLIP_benchmark's own command line, which reports a bad one itself
FORWARDS_FLAGS = {"benchmarks.clip_benchmark"}


def _sources() -> dict[str, ast.Module]:
    """Module name -> syntax tree of every Python file in the code folders."""
    trees = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return trees


SOURCES = _sources()


def _main_guard(tree: ast.Module) -> ast.If | None:
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
                and isinstance(node.test.comparators[0], ast.Constant)
                and node.test.comparators[0].value == "__main__"):
            return node
    return None


ENTRY_POINTS = sorted(name for name, tree in SOURCES.items() if _main_guard(tree) is not None)


def test_the_entry_points_are_found():
    """The enumeration itself: the runners, the trainer and the report are among them."""
    assert {"launch.train", "results.report", "benchmarks.sts", "towers.export", "benchmarks.data.toy",
            "towers.__main__"} <= set(ENTRY_POINTS)
    assert len(ENTRY_POINTS) >= 28


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_main_guard_runs_main_through_run_main(module):
    """`if __name__ == "__main__":` is one call, run_main(...): an InputError raised anywhere below main
    is one line and exit status 2 in every program."""
    body = _main_guard(SOURCES[module]).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Call), module
    call = body[0].value
    assert isinstance(call.func, ast.Name) and call.func.id == "run_main", f"{module}: {ast.unparse(call)}"


def test_one_parser_class_and_one_input_error_base():
    """No parser but OneLineParser (no argparse.ArgumentParser(...) built, none subclassed) and no bad-input
    class that is not an InputError (no other direct ValueError subclass, one class named InputError)."""
    parsers, value_errors, input_errors = [], [], []
    for name, tree in SOURCES.items():
        if name == "runfolder.errors":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == \
                        "ArgumentParser":
                    parsers.append(f"{name}:{node.lineno}")
            elif isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).split(".")[-1] for base in node.bases}
                if "ArgumentParser" in bases:
                    parsers.append(f"{name}:{node.lineno} class {node.name}")
                if "ValueError" in bases:
                    value_errors.append(f"{name}.{node.name}")
                if node.name == "InputError":
                    input_errors.append(name)
    assert parsers == [], "build parsers with runfolder.errors.OneLineParser"
    assert value_errors == [], "bad-input exceptions derive from runfolder.errors.InputError"
    assert input_errors == []


def test_bad_input_classes_are_input_errors_and_control_flow_ones_are_not():
    """Callers keep catching the named classes; run_main catches them all, and never a control-flow one
    (a preemption, a stalled shard, a non-finite loss must not turn into exit status 2)."""
    from benchmarks.data import files, make_shards, shard_specs, tar_stream, timed_read
    from launch import faults, run_record, run_resume, train, trainer
    from results import figures, runs, scaling_spec
    from towers import checkpoints, export

    for cls in (export.ExportError, checkpoints.CheckpointError, shard_specs.ShardSpecError,
                runs.ReportInputError, scaling_spec.SpecError, run_resume.RunError,
                run_record.TrackerUnavailableError):
        assert issubclass(cls, InputError) and cls is not InputError, cls
    assert files.InputError is make_shards.InputError is InputError
    for cls in (faults.Preempted, timed_read.ShardStalled, tar_stream.TarDamage, trainer.NonFiniteLossError,
                train.CheckpointNotWritten, figures.FigureSkipped):
        assert not issubclass(cls, InputError), cls


class _Parsed(Exception):
    """Raised by the spy in place of parsing: carries the parser a main built."""

    def __init__(self, parser):
        self.parser = parser


def _required_argv(parser) -> list[str]:
    """Values for the parser's required arguments (a subcommand's too), so that the unknown flag is what
    it reports: the options first, then the positionals."""
    options, positionals = [], []
    for action in parser._actions:
        if action.required and action.option_strings:
            options += [action.option_strings[0], *(["1"] if action.nargs != 0 else [])]
        elif action.required and isinstance(action.choices, dict):  # subcommands: the first, and its own
            name, subparser = next(iter(action.choices.items()))
            positionals += [name, *_required_argv(subparser)]
        elif action.required:
            positionals.append(str(next(iter(action.choices))) if action.choices else "1")
    for group in parser._mutually_exclusive_groups:
        if group.required:
            options += [group._group_actions[0].option_strings[0], "1"]
    return options + positionals


@pytest.mark.parametrize("module", [m for m in ENTRY_POINTS if m not in FORWARDS_FLAGS])
def test_unknown_flag_is_one_line_and_exit_status_2(module, monkeypatch, capsys):
    main = importlib.import_module(module).main
    with monkeypatch.context() as spy:  # first the parser main builds, to fill its required arguments
        def parsed(self, *args, **kwargs):
            raise _Parsed(self)

        spy.setattr(OneLineParser, "parse_known_args", parsed)
        with pytest.raises(_Parsed) as built:
            main([BAD_FLAG])
    argv = [*_required_argv(built.value.parser), BAD_FLAG]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, (module, argv, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and BAD_FLAG in err, (module, argv, err)


def test_report_bad_flag_is_one_line_not_a_usage_dump(tmp_path):
    """End to end through the interpreter: `python -m results.report` (it printed argparse's usage)."""
    argv = [sys.executable, "-m", "results.report", "runs/x", "--out", str(tmp_path), BAD_FLAG]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: unrecognized arguments: {BAD_FLAG}\n"


def test_run_main_turns_an_input_error_below_main_into_one_line(capsys):
    from towers.checkpoints import CheckpointError

    def main():
        raise CheckpointError("runs/x/checkpoints/step_00000010.pt: not a checkpoint\n(expected a zip)")

    with pytest.raises(SystemExit) as exit_info:
        run_main(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: runs/x/checkpoints/step_00000010.pt: not a checkpoint (expected a zip)\n"


@pytest.mark.parametrize("result, status, code", [(3, None, 3), (0, None, 0), ({"failed": []}, None, 0),
                                                  (None, None, 0), (True, None, 0),
                                                  ({"failed": ["x"]}, lambda r: 1 if r["failed"] else 0, 1)])
def test_run_main_exit_status(result, status, code):
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: result, status=status)
    assert exit_info.value.code == code


def test_run_main_lets_other_errors_through():
    """A bug is a traceback, not a one-line bad-input message."""
    def main():
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_main(main)
