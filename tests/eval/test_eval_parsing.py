"""The strict option parser and the research code's ``meld_dump`` reproduction."""

from __future__ import annotations

import pytest
from helpers.fixtures_data import CRISIS_CLASSES

from fedmllm.eval.parsing import RESEARCH_FAILURE_INDEX, parse_option, research_parse

HATEFUL = ["not-hateful", "hateful"]
CRISIS = list(CRISIS_CLASSES)  # the published class names, as the reader tests use them


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", 1),
        ("  B  ", 1),
        ("(B)", 1),
        ("B)", 1),
        ("B.", 1),
        ("B:", 1),
        ("B) hateful", 1),
        ("(B) hateful", 1),
        ("(A) not-hateful", 0),
        ("B hateful", 1),
        ("B\nThe meme mocks a group.", 1),
        ("B. The meme mocks a group.", 1),
        ("Answer: B", 1),
        ("answer: (A)", 0),
        ("The best answer is: (B) hateful.", 1),
        ("The answer is A.", 0),
        ("**B**", 1),
        ("Option B", 1),
    ],
)
def test_valid_letter_forms(text: str, expected: int) -> None:
    assert parse_option(text, HATEFUL) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hateful", 1),
        ("Hateful.", 1),
        ("HATEFUL", 1),
        ("not-hateful", 0),  # contains "hateful", but the exact option wins
        ("Not hateful", 0),  # hyphen, underscore and space are the same separator
        ("not-hateful, the caption is harmless", 0),
        ("hateful meme", 1),
    ],
)
def test_option_text(text: str, expected: int) -> None:
    assert parse_option(text, HATEFUL) == expected


def test_option_text_prefix_does_not_misfire() -> None:
    # "not" is a prefix of "not-hateful" only across a hyphen: no match; the longest wins.
    opts = ["not", "not-hateful", "hateful"]
    assert parse_option("not-hateful", opts) == 1
    assert parse_option("not", opts) == 0
    assert parse_option("not hateful at all", opts) == 1
    assert parse_option("hatefulness", HATEFUL) is None
    assert parse_option("injured or dead people", CRISIS) == 2
    assert parse_option("(H) not_humanitarian", CRISIS) == 7


@pytest.mark.parametrize(
    "text",
    [
        "Based on the image, the answer is B",  # distractor capital "B" of "Based"
        "A meme showing a cat",  # "A" is an article here
        "Both are possible",
        "I think B",
        "The image is ambiguous.",
        "",
        "   ",
        "Answer:",
        "b",  # lower-case letters are not read as option letters
        "B.Sc graduates",
        "hatefulness",
        "B) not-hateful",  # letter and text contradict
        "(A) hateful",
        "A hateful",
    ],
)
def test_invalid(text: str) -> None:
    assert parse_option(text, HATEFUL) is None


@pytest.mark.parametrize("text", ["C", "(C)", "C) hateful", "Answer: D", "H"])
def test_letter_beyond_options_is_invalid(text: str) -> None:
    assert parse_option(text, HATEFUL) is None


def test_eight_options() -> None:
    assert parse_option("H", CRISIS) == 7
    assert parse_option("(C) injured_or_dead_people", CRISIS) == 2
    assert parse_option("I", CRISIS) is None
    assert parse_option("Hateful", CRISIS) is None


def test_indistinct_options_rejected() -> None:
    with pytest.raises(ValueError):
        parse_option("A", ["not hateful", "Not-Hateful"])
    with pytest.raises(ValueError):
        parse_option("A", [])


@pytest.mark.parametrize(
    "text, num_options, expected",
    [
        ("B", 2, 1),
        ("(A) not-hateful", 2, 0),
        ("Answer: B", 2, 1),
        # the quirks: the first capital anywhere counts ...
        ("Based on the image, the answer is A", 2, 1),
        ("The meme is hateful. A", 2, 0),
        # ... a failure becomes index 2, a real class for CrisisMMD ...
        ("hateful", 2, RESEARCH_FAILURE_INDEX),
        ("C", 2, RESEARCH_FAILURE_INDEX),  # in [A-G] but not an option
        ("( B )", 2, RESEARCH_FAILURE_INDEX),  # strips to " B ", not a letter
        ("", 8, RESEARCH_FAILURE_INDEX),
        # ... and with eight options "H" of any word is class H.
        ("Hateful", 8, 7),
        ("Hateful", 2, RESEARCH_FAILURE_INDEX),  # H is outside [A-G]
        ("(E) rescue", 8, 4),
    ],
)
def test_research_parse_reproduces_meld_dump(text: str, num_options: int, expected: int) -> None:
    assert research_parse(text, num_options) == expected
