"""Evaluate a model on a test set, overall and per modality (image+text, image only, text only).

The per-modality breakdown is the question this field asks: the same test samples are shown with
both modalities, with the image only and with the text only (prompts built for the modality
present, with the run's prompt strategy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.prompts import build_prompt
from ..data.records import Sample
from ..model.collate import Encoded, encode_sample
from .metrics import classification_metrics
from .scoring import generate, score_options
from .vqa import vqa_metrics

VIEWS = {"image_text": (True, True), "image_only": (True, False), "text_only": (False, True)}


def view(samples: Sequence[Sample], name: str) -> list[Sample]:
    """The samples as seen with one modality view (``image_text`` keeps what they have)."""
    img, txt = VIEWS[name]
    return [s.with_modality(img and s.has_image, txt and s.has_text) for s in samples]


def predict(model, processor, samples: Sequence[Sample], strategy: str = "plain",
            batch_size: int = 32, device=None, dtype=None, max_new_tokens: int = 16,
            cache: dict | None = None) -> dict:
    """Raw predictions: ``probs`` (N x K) for multiple choice, ``texts`` for VQA.

    ``cache`` (any dict kept by the caller) memoises the encoded prompts across evaluations.
    """
    prompts = [build_prompt(s, strategy) for s in samples]
    images = [s.image for s in samples]
    if samples[0].options:
        answers = _option_answers(samples[0])

        def encode(i: int) -> Encoded:
            key = (samples[i].id, samples[i].modality, strategy)
            if cache is None:
                return encode_sample(processor, prompts[i], images[i])
            if key not in cache:
                cache[key] = encode_sample(processor, prompts[i], images[i])
            return cache[key]

        probs = score_options(model, processor, prompts, images, answers, batch_size, device,
                              dtype, encode=encode)
        return {"prompts": prompts, "probs": probs}
    texts = generate(model, processor, prompts, images, max_new_tokens, batch_size, device, dtype)
    return {"prompts": prompts, "texts": texts}


def _option_answers(sample: Sample) -> list[str]:
    """The supervised answer string of every option, in the format of ``sample.answer``."""
    from ..data.prompts import mc_answer

    return [mc_answer(tuple(sample.options), i) for i in range(len(sample.options))]


def metrics_from_predictions(samples: Sequence[Sample], pred: dict) -> dict:
    if "probs" in pred:
        probs: torch.Tensor = pred["probs"]
        y_true = [s.label for s in samples]
        y_pred = probs.argmax(-1).tolist()
        return classification_metrics(y_true, y_pred, probs.numpy(), num_classes=probs.shape[1])
    records = [{"prediction": t, "answer": s.answer, "answer_type": s.answer_type,
                "question_type": s.meta.get("question_type")} for s, t in zip(samples, pred["texts"])]
    return vqa_metrics(records)


def evaluate(model, processor, samples: Sequence[Sample], strategy: str = "plain",
             views: Sequence[str] = ("image_text", "image_only", "text_only"),
             batch_size: int = 32, device=None, dtype=None, max_samples: int | None = None,
             return_predictions: bool = False, cache: dict | None = None) -> dict:
    """Metrics on ``samples`` as given, plus ``per_modality`` for each requested view.

    The top-level metrics are those of the first view (``image_text`` by default: the test set
    with every modality it has).
    """
    samples = list(samples)[:max_samples] if max_samples else list(samples)
    result: dict = {"per_modality": {}}
    preds: dict = {}
    for name in views:
        vs = view(samples, name)
        p = predict(model, processor, vs, strategy, batch_size, device, dtype, cache=cache)
        result["per_modality"][name] = metrics_from_predictions(vs, p)
        preds[name] = (vs, p)
    first = result["per_modality"][views[0]]
    result.update({k: v for k, v in first.items()})
    if return_predictions:
        result["_predictions"] = preds
    return result
