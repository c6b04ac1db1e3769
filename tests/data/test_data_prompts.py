"""Exact prompt strings (research-code.md §1.6 and §3.6) for every modality case and strategy."""

from __future__ import annotations

import pytest
from PIL import Image

from fedmllm.data.prompts import build_prompt, mc_answer, to_conversation
from fedmllm.data.types import Sample

S = ("Answer with the option's letter from the given choices directly and only give the best "
     "option. The best answer is: ")
SEL = "Select the best answer to the following multiple-choice question"
O_H = "\n(A) not-hateful\n(B) hateful"
O_C = ("\n(A) affected_individuals\n(B) infrastructure_and_utility_damage"
       "\n(C) injured_or_dead_people\n(D) missing_or_found_people"
       "\n(E) rescue_volunteering_or_donation_effort\n(F) vehicle_damage"
       "\n(G) other_relevant_information\n(H) not_humanitarian")
TEXT = "look at this meme"

HATEFUL_PLAIN = {
    (True, True): f"{SEL} based on the text and image.\n{TEXT}\n"
                  f"Is the content hateful based on the text and image?\nOptions:{O_H}\n{S}",
    (False, True): f"{SEL} based on the text.\n{TEXT}\n"
                   f"Is the content hateful based on the text?\nOptions:{O_H}\n{S}",
    (True, False): f"{SEL} based on the image.\n"
                   f"Is the content hateful based on the image?\nOptions:{O_H}\n{S}",
    (False, False): f"{SEL}.\nIs the content hateful?\nOptions:{O_H}\n{S}",
}
CRISIS_PLAIN = {
    (True, True): f"{SEL} based on the text and image.\n{TEXT}\n"
                  f"What is the humanitarian category based on the image and text?\n"
                  f"Options:{O_C}\n{S}",
    (False, True): f"{SEL} based on the text.\n{TEXT}\n"
                   f"What is the humanitarian category based on the text?\nOptions:{O_C}\n{S}",
    (True, False): f"{SEL} based on the image.\n"
                   f"What is the humanitarian category based on the image?\nOptions:{O_C}\n{S}",
    (False, False): f"{SEL}.\nWhat is the humanitarian category?\nOptions:{O_C}\n{S}",
}
AG = ", without considering the modality"


def _agnostic(question: str, options: str, has_text: bool) -> str:
    text = f"{TEXT}\n" if has_text else ""
    return f"{SEL}{AG}.\n{text}{question}{AG}?\nOptions:{options}\n{S}"


def _sample(task, options, image, text, label=1):
    return Sample(id="7", task=task, answer=mc_answer(options, label), image=image, text=text,
                  label=label, options=options)


CASES = [(True, True), (False, True), (True, False), (False, False)]


@pytest.mark.parametrize("has_image,has_text", CASES)
def test_hateful_templates(has_image, has_text):
    opts = ("not-hateful", "hateful")
    s = _sample("hateful_memes", opts, "/x/img/1.png" if has_image else None,
                TEXT if has_text else None)
    assert build_prompt(s) == HATEFUL_PLAIN[(has_image, has_text)]
    assert build_prompt(s, "agnostic") == _agnostic("Is the content hateful", O_H, has_text)
    assert s.answer == "(B) hateful"


@pytest.mark.parametrize("has_image,has_text", CASES)
def test_crisismmd_templates(has_image, has_text):
    from fedmllm.data.datasets.crisismmd import CRISISMMD_OPTIONS

    s = _sample("crisismmd", CRISISMMD_OPTIONS, "/x/a.jpg" if has_image else None,
                TEXT if has_text else None, label=7)
    assert build_prompt(s) == CRISIS_PLAIN[(has_image, has_text)]
    assert build_prompt(s, "agnostic") == _agnostic("What is the humanitarian category", O_C,
                                                     has_text)
    assert s.answer == "(H) not_humanitarian"


def test_synth_templates_follow_the_same_style():
    img = Image.new("RGB", (32, 32))
    s = _sample("synth_binary", ("safe", "unsafe"), img, "look at this puppy", label=0)
    assert build_prompt(s) == (
        f"{SEL} based on the text and image.\nlook at this puppy\n"
        f"Is the content unsafe based on the text and image?\n"
        f"Options:\n(A) safe\n(B) unsafe\n{S}"
    )
    assert build_prompt(s.with_modality(True, False), "agnostic") == (
        f"{SEL}{AG}.\nIs the content unsafe{AG}?\nOptions:\n(A) safe\n(B) unsafe\n{S}"
    )


def test_vqa_uses_raw_question_and_conversation_format(tmp_path):
    s = Sample(id="q1", task="vqa_rad", answer="yes", question="Is there a fracture?",
               image=str(tmp_path / "a.png"), answer_type="CLOSED")
    assert build_prompt(s) == "Is there a fracture?"
    assert build_prompt(s, "agnostic") == "Is there a fracture?"
    conv = to_conversation(s)
    assert conv == {
        "id": "q1",
        "image": str(tmp_path / "a.png"),
        "conversations": [
            {"role": "user", "content": "<image>\nIs there a fracture?"},
            {"role": "assistant", "content": "yes"},
        ],
    }
    t = Sample(id=3, task="medalpaca", answer="insulin", question="What lowers glucose?")
    assert to_conversation(t) == {
        "id": 3, "image": None,
        "conversations": [{"role": "user", "content": "What lowers glucose?"},
                          {"role": "assistant", "content": "insulin"}],
    }


def test_conversation_for_mc_and_errors():
    s = _sample("hateful_memes", ("not-hateful", "hateful"), "rel/img.png", TEXT, label=0)
    conv = to_conversation(s, "plain")
    assert conv["image"].endswith("rel/img.png") and conv["image"].startswith("/")
    assert conv["conversations"][0]["content"] == "<image>\n" + HATEFUL_PLAIN[(True, True)]
    assert conv["conversations"][1]["content"] == "(A) not-hateful"
    conv = to_conversation(s.with_modality(False, True))
    assert conv["image"] is None
    assert conv["conversations"][0]["content"] == HATEFUL_PLAIN[(False, True)]
    with pytest.raises(ValueError, match="strategy"):
        build_prompt(s, "clever")
    with pytest.raises(TypeError):
        to_conversation(s.__class__(id="m", task="synth_binary", answer="(A) safe",
                                    image=Image.new("RGB", (2, 2)), text="x", label=0,
                                    options=("safe", "unsafe")))
