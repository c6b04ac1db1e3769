"""VQA answer normalisation, exact match, token recall and the aggregate table."""

from __future__ import annotations

import json

import pytest

from fedmllm.eval.vqa import (
    Judge,
    answer_kind,
    exact_match,
    normalize_answer,
    token_recall,
    vqa_metrics,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes", "yes"),
        ("  No.  ", "no"),
        ("The X-ray shows TWO nodules.", "xray shows 2 nodules"),
        ("x ray", "xray"),
        ("chest x-ray", "chest xray"),
        ("an apple and the liver", "apple and liver"),
        ("none", "0"),
        ("Ten", "10"),
        ("0.5 cm.", "0.5 cm"),  # a period before a digit stays
        ("left/right", "left right"),  # punctuation not beside a space -> space
        ("left / right", "left right"),  # beside a space -> deleted
        ("1,000 cells", "1000 cells"),  # digit,digit: punctuation deleted
        ("liver, kidney", "liver kidney"),
        ("(brain)", "brain"),
        ("dont know", "don't know"),
        ("line one\nline\tnine", "line 1 line 9"),
        (3, "3"),
    ],
)
def test_normalize_answer(raw: object, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_normalize_keeps_digits_and_words_apart() -> None:
    assert normalize_answer("maxray") == "maxray"
    assert normalize_answer("a") == ""
    assert exact_match("The left lung.", "left lung")
    assert exact_match("Two", "2")
    assert not exact_match("left lung", "right lung")


def test_token_recall() -> None:
    assert token_recall("left lower lobe", "left lobe") == 1.0
    assert token_recall("the left side", "left lower lobe") == pytest.approx(1 / 3)
    assert token_recall("X-ray of the chest", "chest xray") == 1.0
    assert token_recall("nothing", "liver") == 0.0
    # distinct tokens: a repeated ground-truth word counts once
    assert token_recall("mass", "mass mass lesion") == pytest.approx(1 / 2)
    assert token_recall("", "the") == 1.0  # both normalise to nothing
    assert token_recall("liver", "the") == 0.0


def test_answer_kind() -> None:
    assert answer_kind("CLOSED", "left") == "CLOSED"
    assert answer_kind(" closed ", "left") == "CLOSED"
    assert answer_kind("OPEN", "yes") == "OPEN"
    assert answer_kind(None, "Yes.") == "CLOSED"
    assert answer_kind(None, "left lung") == "OPEN"


RECORDS = [
    {"prediction": "Yes", "answer": "yes", "answer_type": "CLOSED", "question_type": "PRES"},
    {"prediction": "no", "answer": "Yes", "answer_type": "CLOSED", "question_type": "PRES"},
    {"prediction": "No.", "answer": "no", "answer_type": None, "question_type": "ABN"},
    {
        "prediction": "left lung",
        "answer": "Left lung",
        "answer_type": "OPEN",
        "question_type": "POS",
    },
    {
        "prediction": "the right lower lobe",
        "answer": "left lower lobe",
        "answer_type": "OPEN",
        "question_type": "POS",
    },
    {"prediction": "CT", "answer": "MRI", "answer_type": None, "content_type": "Modality"},
]


def test_vqa_metrics() -> None:
    m = vqa_metrics(RECORDS)
    assert (m["n"], m["n_closed"], m["n_open"]) == (6, 3, 3)
    assert m["closed_accuracy"] == pytest.approx(2 / 3)
    assert m["open_exact"] == pytest.approx(1 / 3)
    assert m["open_recall"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["overall"] == pytest.approx(3 / 6)
    assert m["per_answer_type"]["CLOSED"] == {
        "n": 3,
        "exact": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
    }
    assert m["per_answer_type"]["OPEN"]["n"] == 3
    qt = m["per_question_type"]
    assert set(qt) == {"PRES", "ABN", "POS", "Modality"}
    assert qt["PRES"]["exact"] == pytest.approx(0.5)
    assert qt["POS"]["recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert "judge_overall" not in m
    json.dumps(m)


def test_vqa_metrics_empty_groups() -> None:
    m = vqa_metrics([{"prediction": "yes", "answer": "yes"}])
    assert m["closed_accuracy"] == 1.0 and m["open_exact"] is None and m["open_recall"] is None
    assert set(m["per_answer_type"]) == {"CLOSED"} and m["per_question_type"] == {}
    assert vqa_metrics([])["overall"] is None


def test_judge_extension_point() -> None:
    class FirstWordJudge:
        def score(self, question: str, prediction: str, answer: str) -> float:
            return float(prediction.lower().split()[:1] == answer.lower().split()[:1])

    judge = FirstWordJudge()
    assert isinstance(judge, Judge)
    m = vqa_metrics(RECORDS, judge=judge)
    assert m["judge_overall"] == pytest.approx(
        2 / 6
    )  # "No." vs "no": the toy judge does not normalise
    assert m["judge_open"] == pytest.approx(1 / 3)
    assert "judge" in m["per_answer_type"]["OPEN"] and "judge" in m["per_question_type"]["POS"]
