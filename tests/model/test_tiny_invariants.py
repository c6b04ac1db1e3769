"""The built-in model's invariants: the pre-training corpus, the tokenizer's text and the cache
folder of each recipe stay what they are unless the recipe is changed on purpose (a cached model
stays valid). The hashes below were recorded from corpus version 4 (the tone-of-a-text
questions and the "neither" answers, for issue 13); a deliberate corpus or recipe change bumps
``PRETRAIN_CORPUS_VERSION`` / ``RECIPE_VERSION`` and records them again. (The import rules of the
data and model layers are in ``test_layout.py``.)
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
        "05967fc12837c91449fa142975cf242b1656cc4ddc578bd714a5d03906d84dec")
    # the tokenizer of every built-in model is trained on this one
    assert _sha("\n".join(corpus_text(2000, seed=0)).encode()) == (
        "065109860b2aec2f205b3c44bd0fa3085e811ecb7727568c8284b08a7bf82b92")


def test_pretrain_corpus_is_unchanged():
    from fedmllm.model.tiny import make_pretrain_corpus

    corpus = make_pretrain_corpus(300, seed=0)
    fields = [[s.id, s.question, s.answer, s.meta, s.text] for s in corpus]
    assert _sha(json.dumps(fields).encode()) == (
        "abdab4d74d1c7cecced6c81528ac0ff9557f454717fee378299f60572f78f9d9")
    pixels = b"".join(s.image.tobytes() if s.image is not None else b"-" for s in corpus)
    assert _sha(pixels) == "5855168edcfee2b0740ac0375910fdc7ef0234dc29c085e2ccad3009686de655"


@pytest.mark.parametrize("preset,pretrain,seed,name", [
    ("tiny", True, 0, "tiny-pt-1f59eb2b956f"),
    ("tiny", False, 0, "tiny-init-b94df09271a5"),
    ("tiny", True, 1, "tiny-pt-dfecd73a9401"),
    ("small", True, 0, "small-pt-a124c9304fc1"),
    ("small", False, 0, "small-init-b075bc419e9a"),
    ("deep", True, 0, "deep-pt-bd63229f72ad"),
])
def test_cache_folder_of_the_recipe_is_unchanged(preset, pretrain, seed, name):
    from fedmllm.model.tiny import recipe_dir

    assert recipe_dir(preset, pretrain, seed).name == name
