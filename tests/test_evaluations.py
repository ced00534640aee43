"""The registry of evaluations is the one the runner and training use; the evaluation modules import one
way (no circle, function-level imports counted); the trainer's step takes its precision through its
constructor; resume is a component whose state is declared."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

import towers
from benchmarks import evaluations, imagenet_zeroshot
from benchmarks.classification_metrics import classification_metrics
from benchmarks.encoder import FakeEncoder
from launch.config import Recipe
from launch.run_resume import ResumeState, RunResume
from launch.trainer import ContrastiveStep, build_optimizer
from runfolder import RunFolder
from runfolder.vocabulary import BENCHMARK_VERSIONS, LOGGED_EVAL_KEYS

REPO = Path(__file__).resolve().parents[1]


def _module_imports(path: Path, known: set[str]) -> tuple[set[str], int]:
    """(modules of `known` that `path` imports anywhere, number of import statements inside functions)."""
    found, nested = set(), 0
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {name for name in names if name in known}
            nested += node.col_offset > 0
    return found, nested


def _import_graph() -> tuple[dict[str, set[str]], dict[str, int]]:
    paths = {}
    for path in sorted([*REPO.glob("benchmarks/**/*.py"), *REPO.glob("launch/*.py")]):
        parts = path.relative_to(REPO).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph, nested = {}, {}
    for name, path in paths.items():
        graph[name], nested[name] = _module_imports(path, set(paths))
    return graph, nested


def test_benchmarks_and_launch_import_one_way_function_level_imports_included():
    graph, _ = _import_graph()
    seen, on_path = set(), []

    def visit(module):
        if module in on_path:
            pytest.fail("import circle: " + " -> ".join(on_path[on_path.index(module):] + [module]))
        if module in seen:
            return
        on_path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        on_path.pop()
        seen.add(module)

    for module in sorted(graph):
        visit(module)
    assert "benchmarks.imagenet_zeroshot" not in graph["benchmarks.toy_zeroshot"]
    assert "benchmarks.imagenet_zeroshot" not in graph["launch.train"]  # training goes through the registry


def test_the_evaluation_modules_import_at_the_top_only():
    _, nested = _import_graph()
    for name in ("evaluations", "classification_metrics", "imagenet_scorer", "imagenet_zeroshot",
                 "toy_zeroshot", "performance.throughput", "performance.gpu_check"):
        assert nested[f"benchmarks.{name}"] == 0, name


def test_the_runner_and_training_name_the_registrys_sets_with_their_versions():
    runner = imagenet_zeroshot.build_parser()
    dataset = next(action for action in runner._actions if action.dest == "dataset")
    assert set(dataset.choices) == set(evaluations.EVALUATIONS) == {"toy", "imagenet"}
    for name, evaluation in evaluations.EVALUATIONS.items():
        assert evaluation.name == name and evaluation.version == BENCHMARK_VERSIONS[evaluation.benchmark]
        assert set(evaluation.logged_keys) <= set(LOGGED_EVAL_KEYS)
    with pytest.raises(evaluations.InputError, match="'cifar': not a zero-shot set; expected one of toy, "):
        evaluations.eval_set("cifar", None)


def test_zero_shot_eval_hands_a_set_its_own_arguments_and_returns_its_scores(monkeypatch):
    calls = []
    ranked, targets = torch.tensor([[0, 1], [1, 0], [1, 0]]), torch.tensor([0, 1, 0])
    scores = classification_metrics(ranked, targets)

    def scorer(*args, **kwargs):
        calls.append((args, kwargs))
        return scores

    monkeypatch.setattr(evaluations.EVALUATIONS["imagenet"], "scorer", scorer)
    monkeypatch.setattr(evaluations.EVALUATIONS["toy"], "scorer", scorer)
    encoder = FakeEncoder(lambda text: [1.0], image_fn=lambda image: [1.0])
    result = evaluations.zero_shot_eval(encoder, "imagenet", "val", 8, 1, 10, templates="simple", cache=False)
    assert result["top1"] == pytest.approx(200 / 3) and result["n"] == 3
    evaluations.zero_shot_eval(encoder, "toy", None, 8, 1, 10, templates="simple", cache=False)
    (imagenet_args, imagenet_kwargs), (toy_args, toy_kwargs) = calls
    assert imagenet_args[1:] == ("val", 8, 1, 10) and toy_args[1:] == (None, 8, 1, 10)
    assert imagenet_kwargs["templates"] == "simple" and imagenet_kwargs["cache"] is False
    assert "templates" not in toy_kwargs and "cache" not in toy_kwargs  # the toy set has neither
    with pytest.raises(evaluations.InputError, match="--dataset cifar: expected imagenet or toy"):
        evaluations.zero_shot_eval(encoder, "cifar")


def test_the_step_runs_its_forward_under_the_autocast_it_is_given():
    entered = []

    @contextlib.contextmanager
    def counted():
        entered.append(True)
        yield

    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny", text_overrides={"context_length": 16})
    recipe = Recipe(batch_size=4, warmup_steps=1, precision="fp32")
    step = ContrastiveStep(Accelerator(cpu=True), model, build_optimizer(model, recipe), recipe,
                           autocast=counted)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    step([(images, towers.tokenize(["a red circle"] * 4, 16))], 0)
    assert entered == [True]  # one micro-batch: one forward


def test_resume_state_is_declared_and_a_fresh_run_starts_at_step_0(tmp_path):
    accelerator = SimpleNamespace(process_index=0, is_main_process=True, wait_for_everyone=lambda: None)
    options = SimpleNamespace(resume=None, branch_from=None, init_from=None)
    resume = RunResume(options, Recipe(), {}, RunFolder(tmp_path / "run"), None, accelerator)
    assert resume.start_state() is None
    assert resume.state == ResumeState(resumed_from=None, branched_from=None, resumed_step=None)
