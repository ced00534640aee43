"""Where the runners' data and weights come from: the sources a user expects by default (MTEB's STS
datasets, open_clip's pretrained tags), local copies by option, and a missing source as one line that
names the option to use (exit 2), said before any model is loaded. Offline: network loaders are
replaced by stand-ins that fail as an offline machine does."""

from __future__ import annotations

import open_clip
import pytest

from benchmarks import imagenet_zeroshot, sts, word_order
from benchmarks.data import sts_sets
from benchmarks.data.files import InputError
from benchmarks.encoder import load_encoder


@pytest.fixture
def no_shared_data(tmp_path, monkeypatch):
    """A fresh clone elsewhere: no ../shared/data next to it."""
    monkeypatch.setenv("MIXCLIP_SHARED_DATA", str(tmp_path / "absent"))


@pytest.fixture
def offline_hub(monkeypatch):
    import datasets

    def refuse(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


@pytest.fixture
def model_never_loaded(monkeypatch):
    def refuse(args):
        raise AssertionError("the model was loaded before the data was checked")

    for module in (sts, word_order, imagenet_zeroshot):
        monkeypatch.setattr(module, "encoder_from_args", refuse)


def _one_line_exit_2(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_sts_source_auto_is_local_where_copies_are_and_mteb_elsewhere(shared_data, tmp_path, monkeypatch):
    assert sts_sets.resolve_sts_source("auto", tmp_path) == ("local", tmp_path)  # --data given
    monkeypatch.setenv("MIXCLIP_SHARED_DATA", str(shared_data))
    assert sts_sets.resolve_sts_source("auto", None) == ("local", shared_data)
    monkeypatch.setenv("MIXCLIP_SHARED_DATA", str(tmp_path / "absent"))
    assert sts_sets.resolve_sts_source("auto", None) == ("hf", None)
    assert sts_sets.resolve_sts_source("hf", tmp_path) == ("hf", None)
    assert sts.build_parser().get_default("source") == "auto"


def test_sts_without_local_copies_or_network_names_the_local_option(no_shared_data, offline_hub,
                                                                    model_never_loaded, capsys):
    err = _one_line_exit_2(sts.main, ["--model", "mixer-tiny"], capsys)
    assert "mteb/sts12-sts" in err and "--source local --data DIR" in err


def test_sts_reads_mteb_datasets_by_default_in_a_fresh_clone(no_shared_data, shared_data, monkeypatch,
                                                             tmp_path):
    asked = []

    def hub(name):  # MTEB's copy stands in as the shared TSV
        asked.append(name)
        return sts_sets.read_sts_tsv(shared_data / "sts" / sts_sets.STS_FILES[name], name)

    monkeypatch.setattr(sts_sets, "_load_from_hub", hub)
    record = sts.main(["--model", "mixer-tiny", "--sets", "STS13", "--limit", "30",
                       "--results-dir", str(tmp_path)])
    assert set(asked) == {"STS13"} and record["settings"]["source"] == "hf"
    assert (tmp_path / "sts" / "mixer-tiny-random__sets-STS13__mteb-hf__limit30.json").is_file()


def test_word_order_checks_sts_b_before_the_model_and_every_task(no_shared_data, offline_hub,
                                                                model_never_loaded, capsys):
    err = _one_line_exit_2(word_order.main, ["--model", "mixer-tiny"], capsys)
    assert "STS-B" in err and "--sts-sentences 0" in err and "--sts-source local --sts-data DIR" in err


def test_captioned_data_missing_names_data_toy_and_clip_benchmark(no_shared_data, model_never_loaded, capsys):
    from benchmarks import retrieval

    err = _one_line_exit_2(retrieval.main, ["--model", "mixer-tiny"], capsys)
    assert "--data DIR" in err and "--dataset toy" in err and "benchmarks.data.captions --coco" in err
    assert "mscoco_captions" in err
    err = _one_line_exit_2(word_order.main, ["--model", "mixer-tiny", "--dataset", "captions"], capsys)
    assert "--data DIR" in err


def test_imagenet_val_is_open_clips_spelling_of_data(tmp_path, model_never_loaded, capsys):
    err = _one_line_exit_2(imagenet_zeroshot.main, ["--model", "mixer-tiny", "--imagenet-val",
                                                    str(tmp_path / "missing")], capsys)
    assert str(tmp_path / "missing") in err and "no such directory" in err
    err = _one_line_exit_2(imagenet_zeroshot.main, ["--model", "mixer-tiny", "--imagenet-val", str(tmp_path),
                                                    "--data", str(tmp_path / "other")], capsys)
    assert "give one or the other" in err
    err = _one_line_exit_2(imagenet_zeroshot.main, ["--model", "mixer-tiny"], capsys)
    assert "--imagenet-val" in err and "docs/data.md" in err


def test_open_clip_tags_go_to_open_clip_and_fail_offline_in_one_line(monkeypatch):
    calls = []

    def offline(arch, pretrained=None, **kwargs):
        calls.append((arch, pretrained))
        raise RuntimeError("We couldn't connect to 'https://huggingface.co' to load this file\nmore")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    for kwargs in ({"model": "ViT-B-32"}, {"open_clip_arch": "ViT-B-32"}):
        with pytest.raises(InputError, match="--pretrained FILE") as error:
            load_encoder(pretrained="laion400m_e32", device="cpu", **kwargs)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="--pretrained FILE"):
        load_encoder(model="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", device="cpu")
    hub = "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert calls == [("ViT-B-32", "laion400m_e32")] * 2 + [(hub, None)]
    with pytest.raises(InputError, match="laion400m_e32"):  # not a tag: the tags are listed
        load_encoder(model="ViT-B-32", pretrained="laion9000", device="cpu")
    with pytest.raises(InputError, match="open_clip models"):
        load_encoder(model="mixer-tiny", pretrained="laion400m_e32", device="cpu")
