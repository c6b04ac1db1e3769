"""Label flipping (``fl.attack.kind = label_flip``): class ``l`` of ``K`` becomes ``K - 1 - l``
and the answer string follows it, on the synthetic tasks and on the real datasets' formats;
a task without classes is refused in one line."""

from __future__ import annotations

import pytest
from helpers.fixtures_data import make_crisismmd, make_hateful, make_medical

from fedmllm.data import DataError, federated_data, flip_labels
from fedmllm.data.prompts import mc_answer


def _check_flipped(before, after):
    assert [s.id for s in after] == [s.id for s in before]
    for s, f in zip(before, after, strict=True):
        k = len(s.options)
        assert f.label == k - 1 - s.label and f.answer == mc_answer(s.options, f.label)
        assert f.answer != s.answer or 2 * s.label == k - 1  # only an odd K's middle stays
        assert (f.image, f.text, f.options) == (s.image, s.text, s.options)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_synthetic_labels_flip_and_flip_back(task):
    data = federated_data("synth", 3, seed=0, task=task, train_size=60, test_size=8)
    samples = data.clients[0]
    flipped = flip_labels(samples)
    _check_flipped(samples, flipped)
    assert flip_labels(flipped) == samples  # an involution
    if task == "binary":
        assert {(s.label, f.label) for s, f in zip(samples, flipped, strict=True)} <= {(0, 1),
                                                                                       (1, 0)}


def test_real_formats_flip_through_their_label_and_answer(tmp_path):
    hateful = federated_data("hateful_memes", 2, data_dir=make_hateful(tmp_path / "hm"),
                             verify_images=False)
    crisis = federated_data("crisismmd", 2, data_dir=make_crisismmd(tmp_path / "cm"),
                            verify_images=False)
    for data in (hateful, crisis):
        samples = [s for c in data.clients for s in c]
        _check_flipped(samples, flip_labels(samples))
    assert len(crisis.task.options) > 2  # a multi-class real format, not only binary


def test_a_task_without_classes_is_refused_in_one_line(tmp_path):
    vqa = federated_data("synth", 2, seed=0, task="vqa", train_size=20, test_size=4)
    with pytest.raises(DataError, match=r"^fl.attack.kind: label_flip needs a task with "
                                        r"classes; sample .* free-form answer$"):
        flip_labels(vqa.clients[0])
    medical = federated_data("medical", 2, data_dir=make_medical(tmp_path / "med"),
                             verify_images=False)
    with pytest.raises(DataError, match="label_flip needs a task with classes"):
        flip_labels(medical.clients[0])
