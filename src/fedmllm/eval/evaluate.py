"""Evaluate a model on a test set, overall and per modality (image+text, image only, text only).

The per-modality breakdown is the question this field asks: the same test samples are shown with
both modalities, with the image only and with the text only (prompts built for the modality
present, with the run's prompt strategy).

Multiple choice is read in one of two modes:

``score`` (default)
    option-token probabilities after the prompt (:func:`~.scoring.score_options`): every sample
    gets a class and class probabilities, so ``auroc`` is a true AUROC and ``invalid_rate`` is 0.
``generate``
    greedy decoding of a few tokens (:func:`~.scoring.generate`), read by the strict parser
    :func:`~.parsing.parse_option`. An answer it cannot read is *invalid*: its prediction is
    ``None``, it counts in ``invalid_rate`` and as wrong, and it is never turned into a class.
    There are no probabilities, so ``auroc`` is ``None``. The same generated text is also read
    by the research code's parser :func:`~.parsing.research_parse` (first capital anywhere,
    failures → class 2), and the research code's numbers are reported from *that* parse, as
    :mod:`.metrics` defines them: ``accuracy_research`` (accuracy of the research parse),
    ``auc_hard`` (``roc_auc_score(y_true, research_pred)``, binary only, failures rank above
    class 1), ``macro_f1_research`` (macro-F1 over the labels seen) and
    ``research_parse_differs`` (fraction of samples where the two parsers disagree, an invalid
    strict answer always disagreeing). Every other key is the strict parse's.

VQA is always generated (see :mod:`.vqa`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from ..data.prompts import build_prompt
from ..data.types import Sample
from ..model.collate import Encoded, encode_sample
from .metrics import classification_metrics
from .parsing import parse_option, research_parse
from .scoring import generate, score_options
from .threshold import calibrated_metrics
from .vqa import vqa_metrics

VIEWS = {"image_text": (True, True), "image_only": (True, False), "text_only": (False, True)}
MODES = ("score", "generate")


def view(samples: Sequence[Sample], name: str) -> list[Sample]:
    """The samples as seen with one modality view (``image_text`` keeps what they have)."""
    img, txt = VIEWS[name]
    return [s.with_modality(img and s.has_image, txt and s.has_text) for s in samples]


def predict(model, processor, samples: Sequence[Sample], strategy: str = "plain",
            batch_size: int = 32, device=None, dtype=None, max_new_tokens: int = 16,
            cache: dict | None = None, mode: str = "score", progress=None) -> dict:
    """Raw predictions for ``samples``; always ``prompts``, then by task and ``mode``:

    * multiple choice, ``mode="score"``: ``probs`` (N x K class probabilities);
    * multiple choice, ``mode="generate"``: ``texts`` (generated answers), ``parsed`` (strict
      option index, ``None`` when invalid) and ``research`` (the research parser's index);
    * VQA (no options): ``texts``.

    ``cache`` (any dict kept by the caller) memoises the encoded prompts across evaluations;
    ``progress()`` (optional) is called once per sample as its batch is assembled.
    """
    if mode not in MODES:
        raise ValueError(f"unknown eval mode {mode!r} (expected one of {MODES})")
    prompts = [build_prompt(s, strategy) for s in samples]
    images = [s.image for s in samples]

    def encode(i: int) -> Encoded:
        if progress is not None:
            progress()
        key = (samples[i].id, samples[i].modality, strategy)
        if cache is None:
            return encode_sample(processor, prompts[i], images[i])
        if key not in cache:
            cache[key] = encode_sample(processor, prompts[i], images[i])
        return cache[key]

    options = samples[0].options
    if options and mode == "score":
        probs = score_options(model, processor, prompts, images, _option_answers(samples[0]),
                              batch_size, device, dtype, encode=encode)
        return {"prompts": prompts, "probs": probs}
    texts = generate(model, processor, prompts, images, max_new_tokens, batch_size, device, dtype,
                     encode=encode)
    if not options:
        return {"prompts": prompts, "texts": texts}
    return {"prompts": prompts, "texts": texts,
            "parsed": [parse_option(t, options) for t in texts],
            "research": [research_parse(t, len(options)) for t in texts]}


def _option_answers(sample: Sample) -> list[str]:
    """The supervised answer string of every option, in the format of ``sample.answer``."""
    from ..data.prompts import mc_answer

    return [mc_answer(tuple(sample.options), i) for i in range(len(sample.options))]


def generation_metrics(y_true: Sequence[int], parsed: Sequence[int | None],
                       research: Sequence[int], num_classes: int) -> dict:
    """Metrics of generated multiple-choice answers (see the module docstring).

    ``parsed``: the strict parser's indices (``None`` = invalid); ``research``: the research
    parser's indices on the same texts (its failures are already class 2). The strict metrics
    come from :func:`classification_metrics` without probabilities (``auroc`` is ``None``); the
    research keys are replaced by the research parse's numbers.
    """
    out = classification_metrics(y_true, parsed, None, num_classes=num_classes)
    t = np.asarray(list(y_true), dtype=np.int64)
    r = np.asarray(list(research), dtype=np.int64)
    strict = np.asarray([-1 if p is None else p for p in parsed], dtype=np.int64)
    out.update(accuracy_research=None, research_parse_differs=None)
    if t.size == 0:
        return out
    out.update(
        accuracy_research=float(np.mean(t == r)),
        macro_f1_research=float(f1_score(t, r, average="macro", zero_division=0.0)),
        research_parse_differs=float(np.mean(strict != r)),
        auc_hard=(float(roc_auc_score(t, r))
                  if num_classes == 2 and np.unique(t).size >= 2 else None),
    )
    return out


def metrics_from_predictions(samples: Sequence[Sample], pred: dict,
                             threshold: float | None = None) -> dict:
    """The metrics of ``pred`` (:func:`predict`'s) on ``samples``; with ``threshold`` and
    binary option probabilities also ``accuracy_calibrated`` and ``threshold``
    (:func:`~.threshold.calibrated_metrics`: class 1 when ``p1 / (p0 + p1) > threshold``)."""
    if "probs" in pred:
        probs: torch.Tensor = pred["probs"]
        y_true = [s.label for s in samples]
        y_pred = probs.argmax(-1).tolist()
        out = classification_metrics(y_true, y_pred, probs.numpy(), num_classes=probs.shape[1])
        if threshold is not None and probs.shape[1] == 2:
            out.update(calibrated_metrics(y_true, probs.numpy(), threshold))
        return out
    if "parsed" in pred:
        return generation_metrics([s.label for s in samples], pred["parsed"], pred["research"],
                                  num_classes=len(samples[0].options))
    records = [{"prediction": t, "answer": s.answer, "answer_type": s.answer_type,
                "question_type": s.meta.get("question_type")}
               for s, t in zip(samples, pred["texts"])]
    return vqa_metrics(records)


def evaluate(model, processor, samples: Sequence[Sample], strategy: str = "plain",
             views: Sequence[str] = ("image_text", "image_only", "text_only"),
             batch_size: int = 32, device=None, dtype=None, max_samples: int | None = None,
             return_predictions: bool = False, cache: dict | None = None,
             mode: str = "score", max_new_tokens: int = 16, progress=None,
             threshold: float | None = None) -> dict:
    """Metrics on ``samples`` as given, plus ``per_modality`` for each requested view.

    The top-level metrics are those of the first view (``image_text`` by default: the test set
    with every modality it has). ``mode`` chooses how multiple choice is read (``score`` or
    ``generate``, see the module docstring); ``max_new_tokens`` caps generation.
    ``progress()`` is called once per sample and view (``len(samples) * len(views)`` calls).
    ``threshold``: a calibrated binary decision threshold, reported beside the fixed decision
    in every view (:func:`metrics_from_predictions`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown eval mode {mode!r} (expected one of {MODES})")
    samples = list(samples)[:max_samples] if max_samples else list(samples)
    result: dict = {"per_modality": {}}
    preds: dict = {}
    for name in views:
        vs = view(samples, name)
        p = predict(model, processor, vs, strategy, batch_size, device, dtype,
                    max_new_tokens=max_new_tokens, cache=cache, mode=mode, progress=progress)
        result["per_modality"][name] = metrics_from_predictions(vs, p, threshold)
        preds[name] = (vs, p)
    first = result["per_modality"][views[0]]
    result.update({k: v for k, v in first.items()})
    if return_predictions:
        result["_predictions"] = preds
    return result
