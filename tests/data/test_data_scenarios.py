"""Modality scenarios: statistical properties, determinism, medical variants."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedmllm.data.scenarios import (
    apply_scenario,
    cross,
    hybrid,
    medical_cross,
    medical_hybrid,
    missing,
)
from fedmllm.data.types import Sample


def _clients(k=10, n=200):
    return [
        [Sample(id=f"c{c}-{i}", task="hateful_memes", answer="(A) not-hateful",
                image=f"/img/{c}-{i}.png", text=f"t{i}", label=0,
                options=("not-hateful", "hateful")) for i in range(n)]
        for c in range(k)
    ]


def _mods(clients):
    return [Counter(s.modality for s in c) for c in clients]


def test_aligned_keeps_everything():
    res = apply_scenario(_clients(), "aligned", seed=0)
    assert all(s.modality == "image_text" for c in res.clients for s in c)


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_missing_rate_within_tolerance(rate):
    res = missing(_clients(), rate, seed=1)
    total = Counter(s.modality for c in res.clients for s in c)
    n = 2000
    text_missing = (total["image_only"] + total["none"]) / n
    image_missing = (total["text_only"] + total["none"]) / n
    tol = 4 * np.sqrt(rate * (1 - rate) / n)
    assert abs(text_missing - rate) < tol and abs(image_missing - rate) < tol
    # independence: both missing ~ rate^2
    assert abs(total["none"] / n - rate**2) < 4 * np.sqrt(rate**2 * (1 - rate**2) / n)
    assert res.info["missing_rate"] == rate
    assert [[s.modality for s in c] for c in res.clients] == \
        [[s.modality for s in c] for c in missing(_clients(), rate, seed=1).clients]


@pytest.mark.parametrize("n_img", [0, 3, 7, 10])
def test_cross_exactly_n_image_clients(n_img):
    res = cross(_clients(), n_img, seed=2)
    mods = _mods(res.clients)
    image_clients = [k for k, m in enumerate(mods) if set(m) == {"image_only"}]
    text_clients = [k for k, m in enumerate(mods) if set(m) == {"text_only"}]
    assert len(image_clients) == n_img and len(text_clients) == 10 - n_img
    assert image_clients == res.info["image_clients"]
    with pytest.raises(ValueError, match="image_clients"):
        cross(_clients(), 11, seed=0)


def test_cross_choice_varies_with_seed_and_is_uniform():
    hits = Counter()
    for seed in range(300):
        hits.update(cross(_clients(10, 1), 3, seed).info["image_clients"])
    # each client chosen with probability 0.3
    assert all(abs(hits[k] / 300 - 0.3) < 0.1 for k in range(10))


def test_hybrid_presence_statistics_and_neither_coin_flip():
    img = txt = neither = 0
    trials = 200
    for seed in range(trials):
        res = hybrid(_clients(10, 40), 0.6, seed)
        for k, p in enumerate(res.info["client_presence"]):
            img += p["image"]
            txt += p["text"]
            mods = Counter(s.modality for s in res.clients[k])
            if p["image"] and p["text"]:
                assert set(mods) == {"image_text"}
            elif p["image"]:
                assert set(mods) == {"image_only"}
            elif p["text"]:
                assert set(mods) == {"text_only"}
            else:
                neither += 1
                assert set(mods) <= {"image_only", "text_only"}
                assert 5 < mods["image_only"] < 35  # per-sample coin flip
    assert abs(img / (10 * trials) - 0.6) < 0.03 and abs(txt / (10 * trials) - 0.6) < 0.03
    assert abs(neither / (10 * trials) - 0.16) < 0.03


def test_scenario_validation():
    with pytest.raises(ValueError, match="missing_rate"):
        missing(_clients(), 1.5, 0)
    with pytest.raises(ValueError, match="presence"):
        hybrid(_clients(), -0.1, 0)
    with pytest.raises(ValueError, match="unknown scenario"):
        apply_scenario(_clients(), "diagonal", 0)


def _medical(n_img=70, n_txt=45):
    img = [Sample(id=f"v{i}", task="vqa_rad", answer="yes", question="q?", image=f"/i/{i}.png",
                  answer_type="CLOSED") for i in range(n_img)]
    txt = [Sample(id=f"m{i}", task="medalpaca", answer="a", question="q?", answer_type="OPEN")
           for i in range(n_txt)]
    return img, txt


def test_medical_cross():
    img, txt = _medical()
    res = medical_cross(img, txt, 10, 7, seed=41)
    chosen = res.info["image_clients"]
    assert len(chosen) == 7
    for k, c in enumerate(res.clients):
        if k in chosen:
            assert all(s.task == "vqa_rad" for s in c) and len(c) == 10
        else:
            assert all(s.task == "medalpaca" for s in c) and len(c) == 15
    ids = sorted(s.id for c in res.clients for s in c)
    assert ids == sorted(s.id for s in img + txt)
    # all clients image clients: text data unused, no crash
    res = medical_cross(img, txt, 10, 10, seed=0)
    assert res.info["unused"] == {"image": 0, "text": 45}


def test_medical_hybrid_holders_and_no_zero_division():
    img, txt = _medical()
    for seed in range(30):
        res = medical_hybrid(img, txt, 10, 0.6, seed)
        pres = res.info["client_presence"]
        assert all(p["image"] or p["text"] for p in pres)  # neither -> coin flip per client
        for p, c in zip(pres, res.clients):
            tasks = {s.task for s in c}
            assert ("vqa_rad" in tasks) == p["image"] and ("medalpaca" in tasks) == p["text"]
        used = sum(len(c) for c in res.clients)
        assert used == 115 - res.info["unused"]["image"] - res.info["unused"]["text"]
    res = medical_hybrid(img, txt, 4, 0.0, seed=3)  # nobody draws anything
    assert all(sum(p.values()) == 1 for p in res.info["client_presence"])
    a = medical_hybrid(img, txt, 10, 0.6, 5)
    b = medical_hybrid(list(reversed(img)), list(reversed(txt)), 10, 0.6, 5)
    assert [[s.id for s in c] for c in a.clients] == [[s.id for s in c] for c in b.clients]
