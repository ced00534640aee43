"""runfolder.records and runfolder.score_records, the one owner of each file format's contents: each
writer's bytes, each reader reading back what the writer wrote, every committed file under results/
reading through the typed readers, no module outside runfolder/ spelling the run-folder file names, and
the shared vocabulary assigned nowhere but runfolder/vocabulary.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from runfolder import CONFIG, FINAL_EVAL, METRICS, RunFolder, vocabulary
from runfolder.records import (
    ConfigRecord,
    RecordError,
    final_eval_record,
    final_eval_row,
    flops_per_sample,
    metrics_line,
    read_config,
    read_final_eval,
    read_metric_rows,
    stamped,
    write_json,
)
from runfolder.score_records import (
    is_clip_benchmark_result,
    read_score_json,
    read_score_record,
    result_name,
    score_from_json,
    score_record,
    write_score_record,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
# config.json's keys in the order the trainer has always written them (committed runs have this order;
# git_diff_sha256 came with the drivers' clean-tree stamp)
CONFIG_ORDER = ["name", "model_name", "experiment", "recipe_sha256", "recipe_identity", "run_options",
                "command", "git_commit", "git_diff_sha256", "versions", "world_size", "global_batch_size",
                "device", "torch_threads", "cpu_capability", "precision", "device_settings", "params",
                "flops_per_sample", "resumed_from", "branched_from"]


def config_record(**changes) -> ConfigRecord:
    fields = dict(
        name="mixer-w96-seed0", model_name="mixer-w96",
        experiment={"image_tower": "mixer", "text_tower": "mixer", "variant": "w96",
                    "token_mixing": "caption",
                    "recipe": {"lr": 0.002, "seed": 0, "text_mask": "caption", "precision": "fp32"}},
        recipe_sha256="ab" * 32, recipe_identity={"lr": 0.002, "seed": 0, "global_batch_size": 256},
        run_options={"runs_dir": "runs"}, command="python launch/train.py",
        git_commit="c0ffee", git_diff_sha256=None,
        versions={"python": "3.11.0", "torch": None}, world_size=2, global_batch_size=256, device="cpu",
        torch_threads=2, cpu_capability="AVX512", precision={"requested": "auto", "resolved": "fp32"},
        device_settings={"tf32": None}, params={"image_params": 1, "text_params": 2, "total_params": 3},
        flops_per_sample=flops_per_sample(0.25, 0.5))
    return ConfigRecord(**{**fields, **changes})


def test_config_writes_the_trainers_bytes_and_reads_back(tmp_path):
    record = config_record(resumed_from={"step": 10}, branched_from=None)
    written = record.write(tmp_path / CONFIG)
    assert list(written) == CONFIG_ORDER
    assert written["flops_per_sample"] == {"image_gflops": 0.25, "text_gflops": 0.5, "train_gflops": 2.25}
    # the bytes of the dict literal it replaces, through the same strict indented JSON
    assert (tmp_path / CONFIG).read_text() == json.dumps(written, indent=2) + "\n"
    config = read_config(tmp_path / CONFIG)
    assert config.data == written and config.recipe == record.recipe_identity
    assert config.get("experiment.recipe.lr") == 0.002 and config.get("experiment.nope.x", 7) == 7
    assert config.train_gflops == 2.25 and config.text_mask() == "caption"


def test_config_reader_errors_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / CONFIG
    with pytest.raises(RecordError, match=r"config.json: missing; expected the run's config.json"):
        read_config(path)
    path.write_text("{not json")
    with pytest.raises(RecordError, match=r"config.json: not valid JSON"):
        read_config(path)
    path.write_text(json.dumps({"experiment": {"recipe": {}}}))
    with pytest.raises(RecordError, match=r"missing key 'recipe_sha256'"):
        read_config(path).require("recipe_sha256")
    path.write_text(json.dumps({"flops_per_sample": {"train_gflops": "NaN"}}))
    with pytest.raises(RecordError, match="must be a number"):
        read_config(path).train_gflops  # noqa: B018


@pytest.mark.parametrize("token_mixing, expected", [("causal-front", "causal"), ("full", "caption"),
                                                    (None, "causal")])
def test_a_run_recorded_before_the_text_mask_reads_as_it_trained(tmp_path, token_mixing, expected):
    experiment = {"image_tower": "mixer", "text_tower": "mixer", "variant": "tiny", "recipe": {}}
    if token_mixing:
        experiment["token_mixing"] = token_mixing
    (tmp_path / CONFIG).write_text(json.dumps({"experiment": experiment}))
    assert read_config(tmp_path / CONFIG).text_mask() == expected


def test_metrics_lines_round_trip_with_ci_split_and_the_last_line_per_step(tmp_path):
    started = 1_799_999_990.0
    lines = [
        stamped({"step": 10, "samples_seen": 320, "loss": 3.5, "lr": 1e-3, "skipped": {"image": 2}},
                now=1_800_000_000.0, started=started),
        stamped({"step": 10, "samples_seen": 320, "eval/toy_top1_seen": 40.0,
                 "eval/toy_top1_seen_ci95": [35.0, 45.0], "eval/toy_n_seen": 100}, 1_800_000_001.0, started),
        stamped({"step": 10, "samples_seen": 320, "loss": 3.25}, 1_800_000_002.0, started),  # a resume
    ]
    assert lines[0]["time"] == "2027-01-15T08:00:00+00:00" and lines[0]["elapsed_s"] == 10.0
    text = "".join(metrics_line(line) for line in lines)
    assert text.splitlines()[0] == json.dumps(lines[0], sort_keys=True)
    (tmp_path / METRICS).write_text(text + "\n")
    rows = read_metric_rows(tmp_path / METRICS)
    assert [row["loss"] for row in rows.train] == [3.25] and rows.train[0]["skipped_total"] == 0
    assert rows.evals == [{"step": 10, "samples_seen": 320, "toy_top1_seen": 40.0,
                           "toy_top1_seen_ci_lo": 35.0, "toy_top1_seen_ci_hi": 45.0, "toy_n_seen": 100}]
    (tmp_path / METRICS).write_text(metrics_line(lines[0]) + '{"step": 20}\n')
    with pytest.raises(RecordError, match=r"metrics.jsonl:2: neither a training line"):
        read_metric_rows(tmp_path / METRICS)


def test_final_eval_round_trip(tmp_path):
    final = {"eval/toy_top1": 50.0, "eval/toy_top1_ci95": (45.0, 55.0), "eval/toy_val_loss": float("nan")}
    write_json(tmp_path / FINAL_EVAL, final_eval_record(40, final))
    assert (tmp_path / FINAL_EVAL).read_text() == json.dumps(
        {"step": 40, "eval/toy_top1": 50.0, "eval/toy_top1_ci95": [45.0, 55.0], "eval/toy_val_loss": None},
        indent=2) + "\n"
    record = read_final_eval(tmp_path / FINAL_EVAL)
    assert final_eval_row(record) == {"step": 40, "toy_top1": 50.0, "toy_val_loss": None,
                                      "toy_top1_ci_lo": 45.0, "toy_top1_ci_hi": 55.0}
    assert read_final_eval(tmp_path / "none.json") is None


def test_score_record_round_trip(tmp_path):
    model = {"model_id": "mixer w96/seed0", "run_dir": "runs/x", "step": 40, "recipe_sha256": "cd" * 32,
             "checkpoint_sha256": "ef" * 32}
    code = {"git_commit": "c0ffee", "git_diff_sha256": None}
    record = score_record("sts", vocabulary.BENCHMARK_VERSIONS["sts"], model, code, {"python": "3.11"},
                          "2026-12-07T00:00:00+00:00", "python -m benchmarks.sts", {"limit": 10},
                          {"avg_7": 44.0})
    assert list(record) == ["benchmark", "benchmark_version", "model_id", "model", "checkpoint_sha256",
                            "recipe_sha256", "git_commit", "git_diff_sha256", "versions", "date", "command",
                            "settings",
                            "metrics"]
    path = write_score_record(record, tmp_path, result_name(model["model_id"], "stsb", None, "limit10"))
    assert path == tmp_path / "sts" / "mixer_w96_seed0__stsb__limit10.json"
    read = read_score_record(path)
    assert (read.benchmark, read.model_id, read.recipe_sha256, read.metrics, read.measurement) == \
        ("sts", "mixer w96/seed0", "cd" * 32, {"avg_7": 44.0}, "stsb__limit10")
    with pytest.raises(RecordError, match="expected a benchmark result with 'benchmark' and 'metrics'"):
        score_from_json(path, {"metrics": {}})


# --- every committed file reads ---------------------------------------------------------------------

def test_every_committed_run_and_score_reads_through_the_typed_readers():
    configs = sorted(RESULTS.rglob(CONFIG))
    assert len(configs) >= 170
    for path in configs:
        run = RunFolder(path.parent)
        config = run.read_run_config()
        assert config.recipe and isinstance(config.require("recipe_sha256"), str), path
        assert config.train_gflops > 0 and config.text_mask() in ("causal", "caption"), path
        assert read_metric_rows(run.metrics).train, run.metrics
        final = run.read_final_eval()
        assert final is None or isinstance(final.get("step"), int), run.final_eval
    finals = sorted(RESULTS.rglob(FINAL_EVAL))
    assert finals and all(isinstance(read_final_eval(path), dict) for path in finals)
    scores = sorted(path for path in RESULTS.glob("*/scores/*/*.json"))
    assert len(scores) >= 150
    for path in scores:
        record = read_score_json(path)
        assert is_clip_benchmark_result(record) or score_from_json(path, record).benchmark == path.parent.name


# --- one owner --------------------------------------------------------------------------------------

def _modules_outside_runfolder():
    for folder in ("towers", "benchmarks", "launch", "results"):
        yield from sorted((REPO / folder).rglob("*.py"))


def test_no_module_outside_runfolder_spells_the_run_folder_file_names():
    names = (CONFIG, METRICS, FINAL_EVAL)
    found = []
    for path in _modules_outside_runfolder():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and any(node.value == name or node.value.endswith("/" + name) for name in names):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "use runfolder's CONFIG / METRICS / FINAL_EVAL or RunFolder: " + "; ".join(found)


def test_the_vocabulary_is_defined_only_in_runfolder_vocabulary():
    own = vocabulary.__name__
    defined = {name for name in vars(vocabulary) if not name.startswith("_") and name != "annotations"
               and getattr(getattr(vocabulary, name), "__module__", own) == own}
    assert {"TEMPLATE_SET_NAMES", "PRECISIONS", "MAX_LOGIT_SCALE", "LOGGED_EVAL_KEYS", "BENCHMARK_VERSIONS",
            "legacy_text_reading", "WORD_ORDER_TASKS"} <= defined
    found = []
    for path in [*_modules_outside_runfolder(), *sorted((REPO / "runfolder").glob("*.py"))]:
        if path.name == "vocabulary.py" and path.parent.name == "runfolder":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in defined:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: def {node.name}")
            for name in _assigned_names(targets):
                if name in defined:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not found, "import it from runfolder.vocabulary: " + "; ".join(found)


def _assigned_names(targets) -> list[str]:
    """The names an assignment binds: `X = `, `a, X = `, `module.X = ` (not `row[X] = `)."""
    names = []
    for target in targets:
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, ast.Attribute):
            names.append(target.attr)
        elif isinstance(target, (ast.Tuple, ast.List)):
            names += _assigned_names(target.elts)
    return names
