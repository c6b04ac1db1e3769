"""The built-in model's invariants: the pre-training corpus, the tokenizer's text and the cache
folder of each recipe are the same as before they moved from ``fedmllm.data.synth`` /
``fedmllm.model.tiny`` (a cached model stays valid): the hashes below were recorded from that
code. (The import rules of the data and model layers are in ``test_layout.py``.)
"""

from __future__ import annotations

import hashlib
import json

import pytest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_tokenizer_text_is_unchanged():
    from fedmllm.model.tiny import corpus_text

    assert _sha("\n".join(corpus_text(150, seed=0)).encode()) == (
        "a7afb80f8ef0e7c886f37083da56f921242df7e7c0464d95ccf69158719ccdb2")
    # the tokenizer of every built-in model is trained on this one
    assert _sha("\n".join(corpus_text(2000, seed=0)).encode()) == (
        "6d815f50568da002d314fd85bacd94a696cc52ec91b10ae569b3a02a7bef5609")


def test_pretrain_corpus_is_unchanged():
    from fedmllm.model.tiny import make_pretrain_corpus

    corpus = make_pretrain_corpus(300, seed=0)
    fields = [[s.id, s.question, s.answer, s.meta, s.text] for s in corpus]
    assert _sha(json.dumps(fields).encode()) == (
        "36f2fb8ee34204a9b7e0a6c551d2a551e54a98d5b31cba51eeae8a842fe503c7")
    pixels = b"".join(s.image.tobytes() if s.image is not None else b"-" for s in corpus)
    assert _sha(pixels) == "9a9976d67d7c2c3603b3bd5d833932e18237f01889f800bcdb5e79d4d024d135"


@pytest.mark.parametrize("preset,pretrain,seed,name", [
    ("tiny", True, 0, "tiny-pt-6aecece07ee5"),
    ("tiny", False, 0, "tiny-init-82a16849f27b"),
    ("tiny", True, 1, "tiny-pt-a47167a5d12d"),
    ("small", True, 0, "small-pt-c84483095d30"),
    ("small", False, 0, "small-init-df05fd460651"),
])
def test_cache_folder_of_the_recipe_is_unchanged(preset, pretrain, seed, name):
    from fedmllm.model.tiny import recipe_dir

    assert recipe_dir(preset, pretrain, seed).name == name
