"""``fedmllm eval``: evaluate a saved adapter (or the base model) and write its results."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.errors import DataError
from ..data.types import Sample
from ..files import atomic_write_text
from ..model.loading import ModelError
from .evaluate import VIEWS, evaluate
from .parsing import LETTERS


def base_model_for(args) -> str:
    """``--model``, else ``--model-preset``, else the base recorded with the adapter."""
    if args.model:
        return args.model
    if args.model_preset:
        from ..model.tiny import ensure_tiny

        return str(ensure_tiny(args.model_preset))
    if args.adapter != "none":
        for name, key in (("fedmllm.json", "base_model"),
                          ("adapter_config.json", "base_model_name_or_path")):
            path = Path(args.adapter) / name
            if not path.is_file():
                continue
            try:
                base = json.loads(path.read_text()).get(key)
            except (ValueError, AttributeError):  # not JSON (or not UTF-8), or not an object
                raise ModelError(f"{path}: not a JSON object") from None
            if base:
                return base
    raise ModelError("no base model: pass --model or --model-preset")


def load_test_samples(args) -> list[Sample]:
    """The evaluation samples; a real dataset's images are checked first (as ``prepare``
    does), so a missing or unreadable image is a one-line error before any model loads."""
    from ..data import readers

    ds, split = args.dataset, args.split
    if ds == "synth":
        from ..data.synth import make_synth

        return make_synth(args.task, 0, args.test_size, args.seed)[1]
    if not args.data_dir:
        raise DataError(f"--data-dir is required for --dataset {ds}")
    if split == "test":
        split = readers.TEST_SPLITS.get(ds, split)
    if ds == "hateful_memes":
        samples = readers.read_hateful_memes(args.data_dir, split).samples
    elif ds == "crisismmd":
        samples = readers.read_crisismmd(args.data_dir, split).samples
    elif ds == "vqa_rad":
        samples = readers.read_vqa_rad(args.data_dir, split).samples
    elif ds == "slake":
        samples = readers.read_slake(args.data_dir, split).samples
    else:  # pragma: no cover - argparse restricts it
        raise DataError(f"unknown dataset {ds}")
    return readers.check_images(samples)[0]


def prediction_rows(result: dict) -> list[dict]:
    """One row per (sample, modality view): id, modality, prompt, prediction, correct, ..."""
    rows = []
    for view, (samples, pred) in result["_predictions"].items():
        for i, s in enumerate(samples):
            row = {"id": s.id, "modality": view, "prompt": pred["prompts"][i]}
            if "probs" in pred:
                p = pred["probs"][i].tolist()
                k = max(range(len(p)), key=p.__getitem__)
                row.update(prediction=LETTERS[k], probabilities=[round(x, 6) for x in p],
                           label=s.label, correct=k == s.label)
            elif "parsed" in pred:
                # generated multiple choice: the strict parse (null = invalid) and, for
                # comparison, the research parser's reading of the same text
                k, r = pred["parsed"][i], pred["research"][i]
                row.update(text=pred["texts"][i], prediction=None if k is None else LETTERS[k],
                           prediction_research=LETTERS[r], label=s.label, correct=k == s.label)
            else:
                from .vqa import exact_match

                text = pred["texts"][i]
                row.update(prediction=text, answer=s.answer, answer_type=s.answer_type,
                           correct=bool(exact_match(text, s.answer)))
            rows.append(row)
    return rows


def run_eval(args, console) -> int:
    import torch

    from ..model.loading import load_vlm, resolve_device, resolve_dtype

    views = [v.strip() for v in args.views.split(",") if v.strip()]
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise DataError(f"--views: unknown view '{bad[0] if bad else ''}' "
                        f"(choices: {', '.join(VIEWS)})")
    if args.max_new_tokens < 1:
        raise DataError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    samples = load_test_samples(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    base_name = base_model_for(args)
    model, processor = load_vlm(base_name, device=device, dtype=dtype)
    if args.adapter != "none":
        from peft import PeftModel

        if not (Path(args.adapter) / "adapter_config.json").is_file():
            raise ModelError(f"{args.adapter}: not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, args.adapter).to(device).eval()
    torch.manual_seed(0)
    result = evaluate(model, processor, samples, args.prompt_strategy, views=views,
                      batch_size=args.batch_size, device=device, dtype=dtype,
                      max_samples=args.max_samples, return_predictions=True, mode=args.mode,
                      max_new_tokens=args.max_new_tokens)
    rows = prediction_rows(result)
    metrics = {k: v for k, v in result.items() if not k.startswith("_")}
    metrics["meta"] = {"adapter": args.adapter, "base_model": base_name,
                       "dataset": args.dataset, "split": args.split,
                       "prompt_strategy": args.prompt_strategy, "n": len(rows) // len(views),
                       "mode": args.mode if samples and samples[0].options else "generate"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out / "eval.json", json.dumps(metrics, indent=2))
    console.print(format_table(metrics), markup=False, soft_wrap=True)
    console.print(f"wrote {out / 'eval.json'} and {out / 'predictions.jsonl'}", markup=False)
    return 0


def format_table(metrics: dict) -> str:
    pm = metrics["per_modality"]
    first = next(iter(pm.values()))
    if "accuracy" in first:
        keys = ["accuracy", "macro_f1", "auroc", "auc_hard", "invalid_rate"]
        if "accuracy_research" in first:
            keys.append("accuracy_research")
    else:
        keys = ["overall", "closed_accuracy", "open_exact", "open_recall"]
    w = {k: max(16, len(k) + 2) for k in keys}
    lines = [f"{'view':<12}" + "".join(f"{k:>{w[k]}}" for k in keys)]
    for view, m in pm.items():
        cells = "".join(f"{m.get(k):>{w[k]}.4f}" if isinstance(m.get(k), float)
                        else f"{'-':>{w[k]}}" for k in keys)
        lines.append(f"{view:<12}{cells}")
    return "\n".join(lines)
