"""The synthetic benchmark: determinism, formats, balance and measured vs exact ceilings."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from PIL import Image

from fedmllm.data.prompts import build_prompt
from fedmllm.data.synth import (
    ceilings,
    fact_table,
    make_synth,
)


def _key(s):
    img = s.image.tobytes() if s.image is not None else None
    return (s.id, s.task, s.answer, s.question, s.text, s.label, s.options, s.answer_type, img)


@pytest.mark.parametrize("task", ["binary", "multiclass", "vqa"])
def test_deterministic_and_seed_sensitive(task):
    a_tr, a_te = make_synth(task, 60, 20, seed=5)
    b_tr, b_te = make_synth(task, 60, 20, seed=5)
    assert [_key(s) for s in a_tr + a_te] == [_key(s) for s in b_tr + b_te]
    c_tr, _ = make_synth(task, 60, 20, seed=6)
    assert [_key(s) for s in a_tr] != [_key(s) for s in c_tr]
    # the test set does not depend on the train size
    _, d_te = make_synth(task, 10, 20, seed=5)
    assert [_key(s) for s in d_te] == [_key(s) for s in a_te]


@pytest.mark.parametrize("task", ["binary", "multiclass", "vqa"])
def test_sample_format(task):
    train, test = make_synth(task, 50, 10, seed=0)
    assert len(train) == 50 and len(test) == 10
    assert len({s.id for s in train + test}) == 60
    for s in train + test:
        if s.image is not None:
            assert isinstance(s.image, Image.Image)
            assert s.image.size == (32, 32) and s.image.mode == "RGB"
        if task == "vqa":
            assert s.text is None and s.question and s.answer_type in ("OPEN", "CLOSED")
            assert " " not in s.answer
            if s.answer_type == "CLOSED":
                assert s.answer in ("yes", "no")
            if s.image is None:
                assert s.meta["source"] == "text_qa"
        else:
            assert s.image is not None and s.text
            n = 2 if task == "binary" else 8
            assert len(s.options) == n and 0 <= s.label < n
            letter = "ABCDEFGH"[s.label]
            assert s.answer == f"({letter}) {s.options[s.label]}"
            assert build_prompt(s).endswith("The best answer is: ")


def test_vqa_mix_of_question_kinds_and_text_qa():
    train, test = make_synth("vqa", 600, 200, seed=1)
    src = collections.Counter(s.meta["source"] for s in train)
    assert 0.2 < src["text_qa"] / 600 < 0.4
    assert all(s.image is not None for s in test)  # test_text_fraction defaults to 0
    types = collections.Counter(s.answer_type for s in train if s.image is not None)
    assert types["OPEN"] > 50 and types["CLOSED"] > 50
    qtypes = {s.meta["question_type"] for s in train if s.image is not None}
    assert qtypes == {"colour", "shape", "count"}
    facts = {q: a for q, a, _ in fact_table()}
    for s in train:
        if s.image is None:
            assert facts[s.question] == s.answer


def _lookup_accuracy(samples, key):
    """Accuracy of the best lookup table from the latent cue(s) to the label (on the same data)."""
    groups = collections.defaultdict(collections.Counter)
    for s in samples:
        groups[key(s)][s.label] += 1
    return sum(c.most_common(1)[0][1] for c in groups.values()) / len(samples)


@pytest.mark.parametrize(
    "task,params",
    [
        ("binary", {}),
        ("binary", {"single_ceiling": 0.75}),
        ("binary", {"single_ceiling": 0.9, "label_noise": 0.1}),
        ("binary", {"rule": "xor"}),
        ("multiclass", {}),
        ("multiclass", {"label_noise": 0.2}),
    ],
)
def test_ceilings_match_empirical_lookup_classifier(task, params):
    train, _ = make_synth(task, 4000, 0, seed=11, **params)
    exact = ceilings(task, **params)
    cues = [s.meta["cues"] for s in train]
    emp = {
        "image_text": _lookup_accuracy(train, lambda s: (s.meta["cues"]["image"],
                                                         s.meta["cues"]["text"])),
        "image_only": _lookup_accuracy(train, lambda s: s.meta["cues"]["image"]),
        "text_only": _lookup_accuracy(train, lambda s: s.meta["cues"]["text"]),
    }
    assert len(cues) == 4000
    for k, v in emp.items():
        assert abs(v - exact[k]) < 0.03, (k, v, exact[k])


def test_binary_default_design_properties():
    c = ceilings("binary")
    assert c["image_text"] >= 0.95
    assert 0.65 <= c["image_only"] <= 0.8 and 0.65 <= c["text_only"] <= 0.8
    train, _ = make_synth("binary", 4000, 0, seed=2)
    frac = np.mean([s.label for s in train])
    assert 0.45 < frac < 0.55
    with pytest.raises(ValueError, match="single_ceiling"):
        make_synth("binary", 1, 1, 0, single_ceiling=0.6)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_synth("binary", 1, 1, 0, bogus=1)
    with pytest.raises(ValueError, match="unknown synth task"):
        make_synth("ternary", 1, 1, 0)


def test_image_cue_is_visible_as_colour():
    """The binary image cue is the background colour family: a pixel statistic separates it."""
    train, _ = make_synth("binary", 400, 0, seed=3)
    for s in train:
        px = np.asarray(s.image, dtype=np.int32)
        corner = px[0, 0]  # background pixel
        warm = corner[0] - corner[2] > 60  # warm hues: red >> blue
        assert warm == bool(s.meta["cues"]["image"])


def test_pretrain_corpus_and_tokenizer_text():
    from fedmllm.model.tiny.corpus import corpus_text, make_pretrain_corpus
    corpus = make_pretrain_corpus(300, seed=0)
    assert corpus == make_pretrain_corpus(300, seed=0)
    kinds = collections.Counter(s.meta["kind"] for s in corpus)
    assert set(kinds) == {"shapes", "position", "digit", "match", "reading", "generic_qa", "choice",
                          "word_knowledge", "colour_knowledge", "repeat", "tone"}
    # the tone of a text is asked with and without a picture beside it, and "neither" is an
    # answer for texts with no word of known tone
    tone = [s for s in corpus if s.meta["kind"] == "tone"]
    assert any(s.image is None for s in tone) and any(s.image is not None for s in tone)
    assert any(s.answer.endswith("neither") for s in tone)
    assert all(s.task == "pretrain" and s.options is None for s in corpus)
    # Generic multiple choice teaches the "(C) green" answer format, but never with the
    # benchmark's wording, options or concepts.
    from fedmllm.data.prompts import INSTRUCTION, SUFFIX, SYNTH_BINARY_OPTIONS

    prompts = [build_prompt(s) for s in corpus]
    assert any("Options:" in p for p in prompts)
    assert not any(INSTRUCTION in p or SUFFIX.strip() in p for p in prompts)
    # option words appear only as words to copy, never as the answer to a question
    assert not any(o in build_prompt(s).split() for s in corpus for o in SYNTH_BINARY_OPTIONS
                   if s.meta["kind"] != "repeat")
    assert all(s.text is None and build_prompt(s) == s.question for s in corpus)
    both = [s for s in corpus if s.meta["kind"] == "match"]
    assert both and all(s.image is not None and s.question.startswith(s.meta["text"] + "\n")
                        for s in both)
    assert any(s.image is None for s in corpus) and any(s.image is not None for s in corpus)
    text = corpus_text(150, seed=0)
    assert text == corpus_text(150, seed=0)
    blob = "\n".join(text)
    for phrase in ["Is the content hateful", "What is the humanitarian category",
                   "without considering the modality", "(H) not_humanitarian",
                   "(B) unsafe", "What is the scene category", "Describe the image."]:
        assert phrase in blob


@pytest.mark.processes
def test_data_layer_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, fedmllm.data, fedmllm.data.synth; "
            "bad = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
