"""towers.tokenize gives exactly open_clip.tokenize's ids (it skips open_clip's no-op cleaning of plain
ASCII captions for speed): real captions and STS sentences, toy captions, and adversarial strings."""

from __future__ import annotations

import csv
import random

import open_clip
import pytest
import torch

import towers

ADVERSARIAL = [
    "", " ", "\t\n", "A  Red\tCIRCLE\n", "fish &amp; chips", "fish & chips", "&lt;b&gt;bold&lt;/b&gt;",
    "caf\u00e9 cr\u00e8me", "\u201ccurly quotes\u201d", "\ufb01ne ligature", "\uff21\uff22 full width",
    "mojibake caf\u00c3\u00a9", "escape \x1b[31mred\x1b[0m", "line\r\nbreak", "nul\x00byte", "\u2028sep",
    "emoji \U0001F600 ok", "\u00a0non-breaking\u00a0space", "it's they're we've I'm you'll he'd",
    "1,650 .ixic 0.32 percent", "x" * 500, " ".join(["word"] * 3000), "<start_of_text> literal",
    "UPPER case AND Mixed", "tab\tand\vvertical\fform",
]


def check_equal(texts: list[str], context_length: int) -> None:
    ours = towers.tokenize(texts, context_length)
    reference = open_clip.tokenize(texts, context_length=context_length)
    assert ours.dtype == torch.long and ours.shape == (len(texts), context_length)
    mismatched = [t for t, a, b in zip(texts, ours, reference, strict=True) if not torch.equal(a, b)]
    assert not mismatched, f"{len(mismatched)} texts tokenised differently, e.g. {mismatched[:3]!r}"


@pytest.mark.parametrize("context_length", [77, 32, 5, 1])
def test_adversarial_strings(context_length):
    check_equal(ADVERSARIAL, context_length)
    assert torch.equal(towers.tokenize("a red circle"), open_clip.tokenize("a red circle"))


def test_random_strings_printable_and_not():
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + list("&\t\n\r\x1b\u00e9\u00c3\u00a9\u201c\u2019\ufb01")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    check_equal(texts, 77)


def test_real_captions_and_sts_sentences(shared_data):
    texts = []
    with open(shared_data / "captions" / "captions.tsv", newline="") as f:
        texts += [row["caption"] for row in csv.DictReader(f, delimiter="\t")]
    for name in ("sts12", "stsb", "sickr"):
        with open(shared_data / "sts" / f"{name}.tsv", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        texts += [row[key] for row in rows[:1500] for key in ("sentence1", "sentence2")]
    assert len(texts) > 8000
    check_equal(texts, 77)


def test_toy_captions(tmp_path):
    from benchmarks.data import toy as toy_data
    from benchmarks.data.shards import SkipCounts, expand_shards, iter_shard

    toy = toy_data.ensure_toy(tmp_path, num_train=1000, num_val=64, shard_size=500, progress=False)
    captions = [raw["txt"].decode() for raw in iter_shard(expand_shards(toy.train)[0], SkipCounts())]
    assert len(captions) == 500
    check_equal(captions, 32)
