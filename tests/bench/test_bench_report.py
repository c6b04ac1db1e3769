"""The report's verdicts and measures on sweeps written by hand: claims by the paired test with
Holm's correction (where the old marginal rule said otherwise), the ranking agreeing with the
claims, the gate per method ('no signal' only from the reference), two-valued comparisons
read by the permutation test, AUROC in the headline, seeds reaching the target, rounds to it,
the accuracy curve's area, the client steps, and the tuning section's hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmllm.bench import build_report, load_grid
from fedmllm.bench.results import curve_area, read_results, rounds_to_target
from fedmllm.bench.stats import UNIT, mean_ci, t_p, two_valued
from fedmllm.config import ConfigError

BASE = [0.55, 0.70, 0.85, 0.62, 0.78]
"""Five seeds of a continuous outcome (five groups: never two-valued)."""


def _sweep(tmp_path: Path, acc: dict, seeds: list[int] | None = None, claims=(), curves=None,
           auroc: bool = True, steps: dict | None = None, **state) -> Path:
    """A finished sweep written by hand: ``acc[(setting, method)]`` is the accuracy per seed;
    16 test samples, 8 per class, so the constant answer scores 0.5; ``curves[(setting,
    method, seed)]`` the evaluated rounds; ``steps[method]`` the client steps a run counts."""
    seeds = seeds or list(range(len(next(iter(acc.values())))))
    out = tmp_path / "sweep"
    cells, status = [], {}
    for (s, m), values in acc.items():
        for seed, a in zip(seeds, values, strict=True):
            cid = f"{s}__{m}__s{seed}"
            folder = out / "runs" / cid
            folder.mkdir(parents=True)
            view = {"n": 16, "accuracy": a, "confusion": [[4, 4], [8, 0]],
                    **({"auroc": min(1.0, a + 0.05)} if auroc else {})}
            summary = {"final": {"per_modality": {"image_text": view}},
                       "totals": {"bytes_uploaded": 100, "bytes_downloaded": 100,
                                  "train_seconds": 1.0}}
            if steps and m in steps:
                summary["compute"] = {"client_steps": steps[m]}
            (folder / "summary.json").write_text(json.dumps(summary))
            rows = [{"round": r, "eval": {"per_modality": {"image_text": {"accuracy": v}}}}
                    for r, v in (curves or {}).get((s, m, seed), [])]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            cells.append({"id": cid, "setting": s, "method": m, "seed": seed})
            status[cid] = {"status": "done", "seconds": 1.0}
    methods = list(dict.fromkeys(m for _, m in acc))
    (out / "bench.json").write_text(json.dumps({
        "grid": "g.toml", "settings": list(dict.fromkeys(s for s, _ in acc)),
        "methods": methods, "seeds": seeds, "cells": cells, "status": status,
        "metric": "accuracy", "view": "image_text", "reference": methods[0], "metrics": [],
        "claims": [{"name": c[0], "better": {"method": [c[1]]}, "worse": {"method": [c[2]]}}
                   for c in claims], **state}))
    return out


def _claim_rows(md: str, name: str) -> list[list[str]]:
    """The claim's table rows as cells."""
    block = md.split(f"### {name}\n\n")[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_a_claim_holds_by_the_paired_difference_where_the_intervals_overlap(tmp_path):
    """fedavg is 0.1 above local in every seed, while the seeds move both from 0.55 to 0.85:
    the marginal intervals overlap (the old rule: 'not shown'), the paired difference does not
    include 0 (holds); the ranking says the same."""
    better = [b + 0.1 + e for b, e in zip(BASE, [0.0, 0.01, -0.01, 0.0, 0.005], strict=True)]
    out = _sweep(tmp_path, {("aligned", "fedavg"): better, ("aligned", "local"): BASE},
                 claims=[("F1", "fedavg", "local")])
    assert mean_ci(better, UNIT).lo < mean_ci(BASE, UNIT).hi  # the marginal rule fails
    md = build_report(out)["markdown"].read_text()
    row = _claim_rows(md, "F1")[0]
    assert row[0] == "fedavg" and row[-1] == "holds" and row[5].startswith("t ")
    assert row[4].endswith("(95 %)")  # one comparison: Holm's level is 95 %
    assert "holds in 1 of 1 comparisons, reversed in 0" in md
    assert "| local | 2.00 | -0.101 | better in 0, worse in 1, unclear in 0 |" in md


def test_holm_corrects_a_claims_comparisons_and_the_ranking_reads_the_same(tmp_path):
    """Two settings with paired t p of 0.030 and 0.039: each below 0.05 alone, both 0.060
    after Holm (2 x 0.030, then max(0.060, 0.039)); the claim and the ranking say 'not shown'
    and 'no clear difference' with the same adjusted p."""
    e = [-0.06, -0.03, 0.0, 0.03, 0.06]
    d = {"aligned": [0.07 + x for x in e], "cross": [0.064 + x for x in e]}
    assert t_p(d["aligned"]) == pytest.approx(0.0299, abs=1e-4)
    assert t_p(d["cross"]) == pytest.approx(0.0393, abs=1e-4)
    acc = {}
    for s, diffs in d.items():
        acc[(s, "fedavg")] = [b + x for b, x in zip(BASE, diffs, strict=True)]
        acc[(s, "local")] = BASE
        assert not two_valued(acc[(s, "fedavg")], BASE)
    md = build_report(_sweep(tmp_path, acc, claims=[("F1", "fedavg", "local")]))[
        "markdown"].read_text()
    rows = _claim_rows(md, "F1")
    assert [r[6] for r in rows] == ["0.060 (t)", "0.060 (t)"]
    assert [r[-1] for r in rows] == ["not shown", "not shown"]
    assert [r[5] for r in rows] == ["t 0.030", "t 0.039"]
    # intervals at Holm's levels: the smaller p is tested at 0.05 / 2, the other at 0.05
    assert rows[0][4].endswith("(97.5 %)") and rows[1][4].endswith("(95 %)")
    assert "holds in 0 of 2 comparisons" in md
    for s in d:
        assert f"| {s} | local |" in md
        line = next(x for x in md.splitlines() if x.startswith(f"| {s} | local |"))
        assert line.endswith("| 0.060 (t) | no clear difference |")


def test_the_gate_is_per_method_and_no_signal_comes_from_the_reference_only(tmp_path):
    """aligned: the reference passes, local (0.5, the constant answer) fails: the setting is
    judged and local is marked ✗. cross: the reference fails though local passes: no signal.
    With gate_against = zeroshot (0.8 steady) oneshot (0.7 > 0.5) fails as well."""
    acc = {("aligned", "fedavg"): [0.95, 0.97, 0.96], ("aligned", "local"): [0.5, 0.5, 0.52],
           ("aligned", "zeroshot"): [0.8, 0.81, 0.8], ("aligned", "oneshot"): [0.7, 0.72, 0.71],
           ("cross", "fedavg"): [0.5, 0.52, 0.5], ("cross", "local"): [0.9, 0.92, 0.91],
           ("cross", "zeroshot"): [0.8, 0.81, 0.8], ("cross", "oneshot"): [0.7, 0.72, 0.71]}
    md = build_report(_sweep(tmp_path, acc, focus="oneshot", against=["fedavg"]))[
        "markdown"].read_text()
    assert "| method | aligned | cross (no signal) | mean rank |" in md
    verdict = {line.split(" | ")[0]: line for line in md.split("## Verdict: oneshot")[1]
               .split("\n\n")[2].splitlines()[2:]}  # the focus: judged where there is signal
    assert "(p <0.001 (t), worse)" in verdict["| aligned"]
    assert verdict["| cross"].endswith("(no signal) | 1.000 |")
    assert "| local | 0.507 ± 0.029 ✗ | 0.910 ± 0.025 | 4.0 |" in md
    assert "| aligned | 0.500 ± 0.000 | fedavg, zeroshot, oneshot | local |" in md
    assert "| cross | 0.500 ± 0.000 | local, zeroshot, oneshot | fedavg |" in md
    assert "*no signal* (cross): the reference `fedavg` does not beat the constant answer" in md
    gated = tmp_path / "gated"
    gated.mkdir()
    md = build_report(_sweep(gated, acc, gate_against="zeroshot"))["markdown"].read_text()
    assert "| aligned | 0.500 ± 0.000 | fedavg, zeroshot | local, oneshot |" in md
    assert "| oneshot | 0.710 ± 0.025 ✗ |" in md
    assert "does not beat the constant answer and `zeroshot`" in md
    # bench.signal = "any": a grid whose reference is meant to fail (FedAvg under attack)
    anyone = tmp_path / "any"
    anyone.mkdir()
    md = build_report(_sweep(anyone, acc, signal="any"))["markdown"].read_text()
    assert "| method | aligned | cross | mean rank |" in md and "*no signal*" not in md
    assert "| fedavg | 0.960 ± 0.025 | 0.507 ± 0.029 ✗ |" in md
    assert "a setting has no signal only where every method fails" in md


def test_two_valued_claims_read_the_permutation_test(tmp_path):
    """1.0 or 0.8 per seed against a steady 0.8: with 5 seeds the t test would hold (p 0.016)
    but the permutation test decides (4 of 32 sign vectors: 0.125): not shown; the same
    pattern over 10 seeds holds (p 2/2^8 = 0.0078), the sign and t p beside it."""
    five = [1.0, 1.0, 0.8, 1.0, 1.0]
    out = _sweep(tmp_path, {("a", "fedavg"): five, ("a", "zeroshot"): [0.8] * 5},
                 claims=[("tuned", "fedavg", "zeroshot")])
    row = _claim_rows(build_report(out)["markdown"].read_text(), "tuned")[0]
    assert row[5] == "permutation 0.125; sign 0.125; t 0.016"
    assert row[6] == "0.125 (perm.)" and row[-1] == "not shown"
    ten = tmp_path / "ten"
    ten.mkdir()
    out = _sweep(ten, {("a", "fedavg"): five * 2, ("a", "zeroshot"): [0.8] * 10},
                 claims=[("tuned", "fedavg", "zeroshot")])
    row = _claim_rows(build_report(out)["markdown"].read_text(), "tuned")[0]
    assert row[5].startswith("permutation 0.008; sign 0.008; t ")
    assert row[-1] == "holds"


def test_rounds_to_target_and_the_curve_area_by_hand():
    curve = [(2, 0.5), (4, 0.92), (8, 0.96)]
    assert rounds_to_target(curve, 0.9) == 4 and rounds_to_target(curve, 0.97) == "never"
    assert rounds_to_target([], 0.9) is None
    # rounds 2, 4, 8 -> 0, 1/3, 1: (1/3)(0.5 + 0.92)/2 + (2/3)(0.92 + 0.96)/2 = 0.86333
    assert curve_area(curve) == pytest.approx(0.5 * (1.42 / 3 + 2 * 1.88 / 3))
    assert curve_area([(24, 0.8)]) == 0.8 and curve_area([]) is None


def test_the_report_gives_seeds_at_target_rounds_to_it_and_the_curve_area(tmp_path):
    acc = {("aligned", "fedavg"): [0.96, 0.92, 0.6], ("aligned", "local"): [0.6, 0.62, 0.61]}
    curves = {("aligned", "fedavg", 0): [(2, 0.5), (4, 0.92), (8, 0.96)],
              ("aligned", "fedavg", 1): [(2, 0.7), (4, 0.8), (8, 0.92)],
              ("aligned", "fedavg", 2): [(2, 0.5), (4, 0.6), (8, 0.6)]}
    out = _sweep(tmp_path, acc, curves=curves, target=0.9)
    md = build_report(out)["markdown"].read_text()
    assert "## Reaching accuracy 0.9, and the accuracy curve" in md
    share = md.split("### Seeds reaching 0.9")[1]
    assert "| fedavg | 2/3 |" in share and "| local | 0/3 |" in share
    # rounds 4, 8, never: the median is 8; local has no evaluated rounds
    rounds = md.split("### Rounds to 0.9 (median over seeds)")[1]
    assert "| fedavg | 8 |" in rounds and "| local | - |" in rounds
    rows = {r["seed"]: r for r in read_results(out / "results.csv") if r["method"] == "fedavg"}
    assert (rows[0]["rounds_to_target"], rows[2]["rounds_to_target"]) == (4, "never")
    assert rows[0]["accuracy_area"] == pytest.approx(0.5 * (1.42 / 3 + 2 * 1.88 / 3))
    # most seeds never: 'never'
    out2 = _sweep(tmp_path / "b", acc, curves=curves, target=0.95)
    rounds = build_report(out2)["markdown"].read_text().split("### Rounds to 0.95")[1]
    assert "| fedavg | never |" in rounds


def test_auroc_stands_beside_accuracy_in_the_headline_when_the_cells_have_it(tmp_path):
    acc = {("aligned", "fedavg"): [0.9, 0.92, 0.91], ("aligned", "local"): [0.6, 0.62, 0.61]}
    md = build_report(_sweep(tmp_path, acc, metrics=["auroc"]))["markdown"].read_text()
    head = md.split("## accuracy and auroc (image+text) per method and setting")[1]
    head = head.split("\n## ")[0]
    assert "### auroc (image+text)" in head and "| fedavg | 0.960 ± 0.025 |" in head
    assert md.count("### auroc (image+text)") == 1  # not again among the grid's metrics
    md = build_report(_sweep(tmp_path / "b", acc, auroc=False))["markdown"].read_text()
    assert "## accuracy (image+text) per method and setting" in md and "### auroc" not in md


def test_the_client_steps_are_stated_per_method_where_runs_count_them(tmp_path):
    acc = {("aligned", "fedavg"): [0.9, 0.92, 0.91], ("aligned", "local"): [0.6, 0.62, 0.61]}
    md = build_report(_sweep(tmp_path, acc, steps={"fedavg": 960}))["markdown"].read_text()
    assert "| train s per run | client steps per run |" in md
    assert "| 1.0 | 960 |" in md and "| 1.0 | - |" in md  # local's runs do not count them
    md = build_report(_sweep(tmp_path / "b", acc))["markdown"].read_text()
    assert "client steps" not in md


GRID = """
[bench]
seeds = [0]
target = 0.95

[fixed]
"model.preset" = "tiny"
"""


def test_grid_target_signal_and_gate_against_reach_the_sweep_state(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(GRID)
    g = load_grid(path)
    assert g.target == 0.95 and g.to_json()["target"] == 0.95
    assert g.gate_against is None and g.to_json()["gate_against"] is None
    path.write_text(GRID.replace("target = 0.95\n", ""))
    assert load_grid(path).target == 0.9 and load_grid(path).signal is None
    path.write_text(GRID.replace("target = 0.95", 'signal = "any"'))
    assert load_grid(path).to_json()["signal"] == "any"
    path.write_text(GRID.replace("target = 0.95", 'signal = "fedprox"'))
    with pytest.raises(ConfigError, match="bench.signal: no method 'fedprox'"):
        load_grid(path)
    for bad in ("1.5", "0", '"high"', "true"):
        path.write_text(GRID.replace("0.95", bad))
        with pytest.raises(ConfigError, match="bench.target: expected an accuracy"):
            load_grid(path)
