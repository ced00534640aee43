"""`--report-to tensorboard|wandb|all`: the same numbers as metrics.jsonl reach TensorBoard and wandb
(offline: files under the run, nothing sent), from one process and from two (only the main one logs)."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from test_multinode import free_port

from launch import run_record, train

REPO = Path(__file__).resolve().parents[1]
FAST = ["--tower", "mixer", "--steps", "4", "--warmup-steps", "1", "--batch-size", "8", "--eval-samples",
        "16", "--workers", "1", "--log-every", "2"]
LEVELDB_BLOCK = 32768  # wandb's .wandb files are LevelDB-log framed protobuf Records after a 7-byte header


def wandb_history(run_dir: Path) -> tuple[list[dict], dict, list[str]]:
    """(history rows, config, run ids) read from the run's offline .wandb file(s)."""
    from wandb.proto import wandb_internal_pb2

    rows, config, ids = [], {}, []
    for path in glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")):
        data, pos, pieces = Path(path).read_bytes(), 7, b""
        records = []
        while pos + 7 <= len(data):
            if LEVELDB_BLOCK - pos % LEVELDB_BLOCK < 7:  # a block's tail too short for a header
                pos += LEVELDB_BLOCK - pos % LEVELDB_BLOCK
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind == 0:
                break
            pieces = chunk if kind in (1, 2) else pieces + chunk  # full/first, middle/last
            if kind in (1, 4):
                records.append(pieces)
        for blob in records:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(blob)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                             for item in record.history.item})
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
            elif kind == "run":
                ids.append(record.run.run_id)
    return rows, config, ids


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def jsonl_numbers(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl's numbers by step (a step's train and eval lines merged, as the trackers merge)."""
    by_step: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        numbers = run_record.flat_numbers(json.loads(line))
        by_step.setdefault(numbers.pop("step"), {}).update(numbers)
    return by_step


def test_flat_numbers_and_config_keep_todays_names():
    record = {"step": 3, "loss": 1.5, "skipped": {"corrupt_image": 2, "note": "x"}, "ok": True,
              "eval/toy_top1_ci95": [1.0, 2.0], "time": "now"}
    assert run_record.flat_numbers(record) == {"step": 3, "loss": 1.5, "skipped/corrupt_image": 2}
    config = {"experiment": {"recipe": {"lr": 1e-3, "betas": [0.9, 0.98], "train_data": None}}, "n": 1}
    assert run_record.flat_config(config) == {"experiment/recipe/lr": 1e-3, "n": 1,
                                              "experiment/recipe/betas": "[0.9, 0.98]",
                                              "experiment/recipe/train_data": "none"}


def test_wandb_run_id_is_fixed_by_the_run_folder(tmp_path):
    one = run_record.wandb_run_id(tmp_path / "a" / "run 1")
    assert one == run_record.wandb_run_id(tmp_path / "a" / "run 1") and one.startswith("run_1-")
    assert one != run_record.wandb_run_id(tmp_path / "b" / "run 1")


def test_wandb_without_the_package_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    real = run_record.importlib.util.find_spec
    monkeypatch.setattr(run_record.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    assert train.main([*FAST, "--runs-dir", str(tmp_path), "--report-to", "all"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--report-to all: the wandb package is not installed" in err
    assert '".[wandb]"' in err and not list(tmp_path.iterdir())  # refused before any run folder


def test_unknown_tracker_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*FAST, "--report-to", "mlflow"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--report-to" in err


def _env() -> dict:
    # offline: wandb writes its files under RUN/wandb and sends nothing
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}


def _sent_to_trackers(expected: dict[int, dict]) -> dict[int, dict]:
    """What the trackers must hold, by hand: every number under its namespace, except counters that are
    still 0 (no skipped sample, no non-finite step in these runs) and eval set sizes after their first."""
    sent, sizes_seen = {}, set()
    for step in sorted(expected):
        sent[step] = {}
        for key, value in expected[step].items():
            if key.startswith("skipped/") or key == "nonfinite_steps":
                assert value == 0, key
                continue
            if key.endswith(("_n", "_n_seen", "_n_held_out")) and key in sizes_seen:
                continue
            sizes_seen.add(key)
            sent[step][key if key.startswith("eval/") else f"train/{key}"] = value
    return sent


def _check_trackers_got_the_jsonl(run_dir: Path) -> None:
    expected = jsonl_numbers(run_dir)
    assert sorted(expected) == [2, 4] and "eval/toy_top1" in expected[4] and "loss" in expected[2]
    assert len([key for key in expected[2] if key.startswith("skipped/")]) == 10  # metrics.jsonl keeps all
    sent = _sent_to_trackers(expected)
    rows, config, ids = wandb_history(run_dir)
    assert ids == [run_record.wandb_run_id(run_dir)]  # one run, started by the main process only
    assert [row["_step"] for row in rows] == [2, 4]
    for row in rows:
        assert {k: v for k, v in row.items() if not k.startswith("_")} == sent[row["_step"]]
    written = json.loads((run_dir / "config.json").read_text())
    assert config["recipe_sha256"] == written["recipe_sha256"]
    assert config["experiment/recipe/lr"] == written["experiment"]["recipe"]["lr"]
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert set(scalars) == {tag for numbers in sent.values() for tag in numbers}
    assert {"train/loss", "train/lr", "eval/toy_top1"} <= set(scalars) and "loss" not in scalars
    assert not [tag for tag in scalars if "skipped" in tag] and list(scalars["eval/toy_n"]) == [4]
    for step, numbers in sent.items():
        for tag, value in numbers.items():
            assert scalars[tag][step] == pytest.approx(value, rel=1e-6), tag  # TensorBoard keeps float32
    # one events file and no `<timestamp>/` sub-run for the hparams (one run in TensorBoard's list) ...
    assert [p.name[:20] for p in (run_dir / "tensorboard").iterdir()] == ["events.out.tfevents."]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()  # ... which holds them itself
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_report_to_all_one_process_offline(tmp_path):
    done = subprocess.run([sys.executable, "launch/train.py", *FAST, "--runs-dir", str(tmp_path),
                           "--name", "one", "--report-to", "all"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_trackers_got_the_jsonl(tmp_path / "one")


@pytest.mark.slow
def test_report_to_all_two_gloo_processes_only_main_logs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(REPO / "launch" / "accelerate" / "cpu.yaml"), "--num_processes", "2",
                           "--main_process_port", str(free_port()), "launch/train.py", *FAST,
                           "--batch-size", "4",
                           "--runs-dir", str(tmp_path), "--name", "two", "--report-to", "all"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "two"
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    _check_trackers_got_the_jsonl(run_dir)
