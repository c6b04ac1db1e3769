"""One client's samples alone (what a federation site builds) and the server's test side:
equal to the matching parts of the whole federated data, built without the rest."""

from __future__ import annotations

import pytest
from helpers.fixtures_data import make_crisismmd, make_medical

from fedmllm.config import DataConfig
from fedmllm.data import (
    DataError,
    build_client_data,
    build_federated_data,
    build_test_data,
    prepare,
)
from fedmllm.data.synth import PendingImage, make_synth

N = 5


def _same_parts(cfg: DataConfig, clients=range(N), n: int = N, seed: int = 3):
    full = build_federated_data(cfg, n, seed)
    for k in clients:
        own = build_client_data(cfg, n, seed, k)
        assert own == full.clients[k], k
        assert not any(isinstance(s.image, PendingImage) for s in own)
    server = build_test_data(cfg, n, seed)
    assert server.clients == [] and server.test == full.test
    assert server.extra_tests == full.extra_tests and server.task == full.task
    # the server's manifest: everything but the clients' counts (the nodes report them) and
    # the bad training items skipped (read by the nodes)
    assert server.manifest["clients"] == []
    assert _but_clients(server.manifest) == _but_clients(full.manifest)
    return full


def _but_clients(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("clients", "skipped")}


@pytest.mark.parametrize("scenario", ["aligned", "missing", "cross", "hybrid"])
@pytest.mark.parametrize("partition", ["dirichlet", "iid"])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_client_alone_equals_its_part_of_the_whole(task, partition, scenario):
    cfg = DataConfig(task=task, partition=partition, scenario=scenario, train_size=160,
                     test_size=12, image_clients=2, missing_rate=0.4, presence=0.5)
    full = _same_parts(cfg)
    if scenario != "aligned":  # the scenario really dropped modalities
        assert {s.modality for c in full.clients for s in c} != {"image_text"}


@pytest.mark.parametrize("scenario", ["aligned", "cross", "hybrid"])
def test_a_vqa_client_alone_equals_its_part_of_the_whole(scenario):
    _same_parts(DataConfig(task="vqa", scenario=scenario, train_size=120, test_size=10,
                           image_clients=2))


def test_folder_datasets_build_their_parts(tmp_path):
    _same_parts(DataConfig(dataset="crisismmd", data_dir=str(make_crisismmd(tmp_path / "c"))),
                n=3, clients=range(3))
    _same_parts(DataConfig(dataset="medical", data_dir=str(make_medical(tmp_path / "m")),
                           scenario="cross", image_clients=1), n=3, clients=range(3))


def test_a_client_renders_only_its_own_images(monkeypatch):
    """The labels of the whole training set are drawn, but only client k's images are
    rendered (the others stay pending, never called)."""
    from fedmllm.data import synth

    cfg = DataConfig(train_size=200, test_size=8)
    full = build_federated_data(cfg, N, 0)
    rendered = []
    original = synth._render_digit
    monkeypatch.setattr(synth, "_render_digit",
                        lambda *a: rendered.append(a) or original(*a))
    own = build_client_data(cfg, N, 0, 2)
    assert own == full.clients[2]
    assert len(rendered) == len(own) < 200
    rendered.clear()
    build_test_data(cfg, N, 0)
    assert len(rendered) == 8  # the test set only


def test_pending_images_render_as_the_generator_would():
    for task in ("binary", "multiclass", "vqa"):
        eager, _ = make_synth(task, 40, 0, 9)
        lazy, _ = make_synth(task, 40, 0, 9, lazy=True)
        assert all(isinstance(s.image, PendingImage) for s in lazy if s.image is not None)
        assert [s.image() if s.image is not None else None for s in lazy] == \
            [s.image for s in eager]


def test_prepared_parts(tmp_path):
    prepare(tmp_path / "p", num_clients=3, seed=1, train_size=60, test_size=6)
    cfg = DataConfig(prepared=str(tmp_path / "p"))
    full = build_federated_data(cfg, 3, 1)
    assert build_client_data(cfg, 3, 1, 1) == full.clients[1]
    for k in (0, 2):  # the server never opens a client file
        (tmp_path / "p" / f"client_{k}.json").unlink()
    server = build_test_data(cfg, 3, 1)
    assert server.clients == [] and server.test == full.test
    with pytest.raises(DataError, match="prepared for 3 clients but fl.num_clients = 4"):
        build_test_data(cfg, 4, 1)


def test_a_client_outside_the_federation_is_refused():
    with pytest.raises(DataError, match="client 5: not one of the 5 clients"):
        build_client_data(DataConfig(), N, 0, 5)
