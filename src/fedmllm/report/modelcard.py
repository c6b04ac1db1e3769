"""The model card (``README.md``) written beside every saved adapter.

peft's ``save_pretrained`` writes an empty template ("[More Information Needed]"). fedmllm
replaces it twice:

- :func:`adapter_card` when the adapter is saved (:func:`fedmllm.engine.bundle.save_adapter`):
  what the adapter is and how to load it, before the run's results are known;
- :func:`write_model_card` once the run's ``summary.json`` is written (``Session.finish``):
  the full card of ``adapter/`` (and of every ``adapters/client_<k>/`` of a local-only run)
  with the algorithm, rounds, clients, data, LoRA, the final metrics per modality view, the
  communication, the loading snippet and the citations.

Everything is read from the run folder (``config.yaml``, ``summary.json``,
``data_manifest.json``, the adapter's ``fedmllm.json`` and ``adapter_config.json``), so
``write_model_card(run_folder)`` also (re)writes the card of any finished run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..files import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["CITATION_FEDMLLM", "CITATION_YOCO", "adapter_card", "load_snippet", "model_card",
           "write_model_card"]

PRESET_SCHEME = "fedmllm-preset:"  # fedmllm.model.names.PRESET_SCHEME (kept torch-free here)

#: The authors' own entries (README of the YOCO branch of https://github.com/1xbq1/FedMLLM), as
#: in fedmllm's README.
CITATION_FEDMLLM = """\
@article{xu2024fedmllm,
  title   = {{FedMLLM}: Federated Fine-tuning {MLLM} on Multimodal Heterogeneity Data},
  author  = {Xu, Binqian and Shu, Xiangbo and Mei, Haiyang and Xie, Guosen and Fernando, Basura and Tang, Jinhui},
  journal = {arXiv preprint arXiv:2411.14717},
  year    = {2024}
}"""  # noqa: E501 - the authors' entry as they give it

CITATION_YOCO = """\
@inproceedings{xu2025you,
  title     = {You Only Communicate Once: One-shot Federated Low-Rank Adaptation of {MLLM}},
  author    = {Xu, Binqian and Mei, Haiyang and Bai, Zechen and Gong, Jinjin and Yan, Rui and Xie, Guo-Sen and Yao, Yazhou and Fernando, Basura and Shu, Xiangbo},
  booktitle = {The Thirty-ninth Annual Conference on Neural Information Processing Systems},
  year      = {2025},
  url       = {https://openreview.net/forum?id=FoVF3iL6o3}
}"""  # noqa: E501

ONESHOT_ALGORITHMS = ("yoco", "oneshot")  # fedmllm.engine.factory.ONESHOT_ALGORITHMS


# ----------------------------------------------------------------------------- pieces

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(v: Any) -> str:
    """A configuration value: ``none``, ``true``, ``0.5``, ``16``."""
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _params(d: dict | None) -> str:
    if not d:
        return "defaults"
    return ", ".join(f"{k}={_fmt(v)}" for k, v in d.items())


def _mb(n: Any) -> str:
    return f"{n / 1e6:.2f} MB ({n:,} bytes)" if isinstance(n, (int, float)) else "-"


def _is_hub_id(name: str) -> bool:
    """``org/name`` or ``name`` that is no path on this machine and no preset name."""
    return (bool(name) and not name.startswith((PRESET_SCHEME, "/", ".", "~"))
            and ":" not in name and not Path(name).exists())


def load_snippet(base_name: str, adapter_path: str) -> str:
    """Python that loads the adapter on its base with peft (the built-in presets through
    :func:`fedmllm.model.tiny.ensure_tiny`)."""
    lines = ["from peft import PeftModel",
             "from transformers import AutoModelForImageTextToText, AutoProcessor"]
    if base_name.startswith(PRESET_SCHEME):
        rest = base_name[len(PRESET_SCHEME):]
        random_init = rest.endswith("-init")  # model.pretrain=false
        preset = rest[:-len("-init")] if random_init else rest
        lines.insert(0, "from fedmllm.model.tiny import ensure_tiny")
        args = f'"{preset}"' + (", False" if random_init else "")
        lines.append(f"base = ensure_tiny({args})  # {base_name}: built offline, cached")
    else:
        lines.append(f"base = {json.dumps(base_name)}")
    lines += [(f"model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained"
              f"(base), {json.dumps(adapter_path)})"),
              "processor = AutoProcessor.from_pretrained(base)"]
    return "\n".join(lines)


def _card(base_name: str, tags: list[str], body: list[str]) -> str:
    """A model card: the Hub's front matter (``huggingface_hub.ModelCardData``: the library,
    the base model where it is a Hub id, the tags) above the Markdown ``body``."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="peft", tags=tags,
                         base_model=base_name if _is_hub_id(base_name) else None)
    return str(ModelCard("\n".join(["---", data.to_yaml(), "---", "", *body])))


def _base_of(meta: dict) -> str:
    return str(meta.get("base_model_name") or meta.get("base_model") or "")


def adapter_card(meta: dict, adapter_path: str | Path) -> str:
    """The card written with the adapter, before the run's summary exists."""
    base = _base_of(meta)
    algo = meta.get("algorithm", "federated")
    return _card(base, ["fedmllm", "federated-learning", "lora", str(algo)], [
        f"# {algo} LoRA adapter for {base}",
        "",
        ("A LoRA adapter trained with fedmllm (federated fine-tuning of vision-language models). "
        "The run's results are added to this card when the run finishes (`summary.json`)."),
        "",
        *_how_to_load(base, str(adapter_path)),
        "## Citation",
        "",
        *_bibtex(False),
    ])


def _how_to_load(base: str, adapter_path: str) -> list[str]:
    return ["## How to load it", "", "```python", load_snippet(base, adapter_path), "```", ""]


def _bibtex(oneshot: bool) -> list[str]:
    """The citations as a bibtex block: FedMLLM's, and YOCO's for a one-shot run."""
    return ["```bibtex", CITATION_FEDMLLM, *(["", CITATION_YOCO] if oneshot else []), "```", ""]


def _metric_table(final: dict) -> list[str]:
    """Markdown rows of the final metrics per modality view."""
    pm = final.get("per_modality") or {}
    if not pm:
        return ["No per-view metrics were recorded."]
    first = next(iter(pm.values()))
    if "accuracy" in first:
        cols = [("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"), ("auroc", "AUROC")]
    else:  # VQA
        cols = [("overall", "Overall"), ("closed_accuracy", "Closed accuracy"),
                ("open_exact", "Open exact match"), ("open_recall", "Open recall")]
    rows = ["| View | " + " | ".join(c[1] for c in cols) + " |",
            "|---|" + "---:|" * len(cols)]
    for view, m in pm.items():
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), (int, float)) else "-" for k, _ in cols]
        rows.append(f"| {view} | " + " | ".join(cells) + " |")
    n = first.get("n")
    if isinstance(n, int):
        rows += ["", f"On {n} test samples per view."]
    return rows


def _data_rows(cfg, manifest: dict | None) -> list[tuple[str, str]]:
    p = dict((manifest or {}).get("params") or {})
    d = cfg.data
    dataset = p.get("dataset", d.dataset)
    task = p.get("task", d.task) if dataset == "synth" else ""
    scenario = p.get("scenario", d.scenario)
    param = {"missing": ("missing rate β", p.get("missing_rate", d.missing_rate)),
             "cross": ("image-only clients", p.get("image_clients", d.image_clients)),
             "hybrid": ("modality presence p", p.get("presence", d.presence))}.get(scenario)
    partition = p.get("partition", d.partition)
    rows = [("Dataset", f"{dataset}" + (f" (task {task})" if task else "")),
            ("Scenario", scenario + (f" ({param[0]} = {_fmt(param[1])})" if param else "")),
            ("Partition", partition + (f" (Dirichlet α = {_fmt(p.get('alpha', d.alpha))})"
                                       if partition == "dirichlet" else "")),
            ("Prompt strategy", str(p.get("prompt_strategy", d.prompt_strategy)))]
    if d.prepared:
        rows.append(("Prepared folder", str(d.prepared)))
    test = (manifest or {}).get("test", {}).get("samples")
    if isinstance(test, int):
        rows.append(("Test samples", str(test)))
    return rows


def _training_rows(cfg, summary: dict, base: str) -> list[tuple[str, str]]:
    from .. import __version__

    fl, resolved = cfg.fl, summary.get("resolved") or {}
    what = " (fedmllm's built-in offline model)" if base.startswith(PRESET_SCHEME) else ""
    rows: list[tuple[str, str]] = [("Base model", f"`{base}`{what}"),
                                   ("Trained with", f"fedmllm {__version__}")]
    rows += (_oneshot_rows(fl, summary, resolved) if fl.algorithm in ONESHOT_ALGORITHMS
             else _round_rows(fl, summary))
    objective = resolved.get("objective", fl.client.objective)
    obj_params = {"prox": {"prox_mu": fl.client.prox_mu},
                  "adaptive_prox": {"prox_mu": fl.client.prox_mu, "mu_w": fl.client.mu_w,
                                    "s_layer": fl.client.s_layer},
                  "yoco": {"a_penalty": fl.yoco.a_penalty, "lam": fl.yoco.lam,
                           "gamma_min": fl.yoco.gamma_min,
                           "gamma_max": fl.yoco.gamma_max}}.get(objective)
    rows.append(("Client objective", objective + (f" ({_params(obj_params)})"
                                                  if obj_params else "")))
    lr = resolved.get("lr", cfg.train.lr)
    optimizer = resolved.get("optimizer", cfg.train.optimizer)
    schedule = f"{cfg.train.lr_schedule} over rounds"
    rows.append(("Client optimizer",
                 f"{optimizer}, lr {_fmt(lr)} ({schedule}), batch size {cfg.train.batch_size}"))
    rows.append(("Seed", str(cfg.seed)))
    return rows


def _oneshot_rows(fl, summary: dict, resolved: dict) -> list[tuple[str, str]]:
    """The training of a one-shot run: the method, its merge, the initialisation, epochs."""
    y = fl.yoco
    method = summary.get("method", y.method)
    what = f"one-shot ({fl.algorithm}), method {method}"
    if method == "yoco":
        what += f", variant {y.variant}"
    epochs = (f"best of {y.select_epochs} on a held-out {y.val_fraction:g}"
              if y.select_epochs else f"{y.local_epochs:g}")
    return [("Algorithm", what),
            ("Merge", f"B: {y.merge_b}, A: {y.merge_a}" if method in ("yoco", "combine")
             else method),
            ("Initialisation", str(resolved.get("init", y.init))),
            ("Rounds", "1 (every client trains once and uploads once)"),
            ("Clients", f"{fl.num_clients} total, all in the single round"),
            ("Local epochs", epochs)]


def _round_rows(fl, summary: dict) -> list[tuple[str, str]]:
    """The training of a multi-round run: the strategy with its full parameters, rounds,
    clients and local training."""
    params = dict(fl.strategy)
    try:  # the strategy's full parameters, defaults included
        from ..fl import make_strategy

        if fl.algorithm == "scaffold":
            params.setdefault("num_clients", fl.num_clients)
        params = make_strategy(fl.algorithm, **params).config() or params
    except (ValueError, TypeError) as e:  # the card shows what was configured instead
        log.debug("strategy parameters: %s", e)
    totals = summary.get("totals") or {}
    per_round = fl.trained_per_round()
    local = (f"{fl.local_epochs:g} epochs" if fl.local_epochs is not None
             else f"{fl.local_steps} steps")
    rows = [("Algorithm", fl.algorithm),
            ("Strategy parameters", _params(params)),
            ("Rounds", str(totals.get("rounds", fl.rounds))),
            ("Clients", f"{fl.num_clients} total, {per_round} per round"),
            ("Local training per round", local)]
    if "compute" in summary:
        rows.append(("Client optimizer steps", str(summary["compute"]["client_steps"])))
    if totals.get("skipped_rounds"):
        rows.append(("Skipped rounds", ", ".join(map(str, totals["skipped_rounds"]))))
    return rows


def _lora_rows(cfg, summary: dict, adapter_config: dict | None) -> list[tuple[str, str]]:
    lora = (summary.get("resolved") or {}).get("lora") or {}
    r, alpha = lora.get("r", cfg.lora.r), lora.get("alpha", cfg.lora.alpha)
    if lora.get("target_regex"):
        targets = f"regex `{lora['target_regex']}`"
    else:
        mods = ", ".join(lora.get("modules") or cfg.lora.modules)
        layers = lora.get("layers")
        targets = f"{mods} in " + (f"layers {layers}" if layers is not None else "every layer") \
            + " of the language model"
    rows = [("Rank r", str(r)), ("Alpha", _fmt(alpha)), ("Targets", targets),
            ("Dropout", _fmt(lora.get("dropout", cfg.lora.dropout)))]
    saved_r = (adapter_config or {}).get("r")
    if isinstance(saved_r, int) and saved_r != r:
        rows.append(("Saved rank", (f"{saved_r} (alpha {_fmt(adapter_config.get('lora_alpha'))}):"
                                   " the merged or PiSSA-converted adapter, which loads on the"
                                   " original base model")))
    if cfg.model.modules_to_save:
        rows.append(("Trained in full", ", ".join(cfg.model.modules_to_save)))
    return rows


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def model_card(cfg, summary: dict, adapter_dir: Path, manifest: dict | None = None,
               client: int | None = None) -> str:
    """The full card of the adapter in ``adapter_dir`` (client ``client``'s own adapter of a
    local-only run when given)."""
    meta = _read_json(adapter_dir / "fedmllm.json") or {}
    adapter_config = _read_json(adapter_dir / "adapter_config.json")
    base = _base_of(meta) or str((adapter_config or {}).get("base_model_name_or_path", ""))
    algo, d = cfg.fl.algorithm, cfg.data
    oneshot = algo in ONESHOT_ALGORITHMS
    what = d.dataset + (f"/{d.task}" if d.dataset == "synth" else "") + f" ({d.scenario})"
    title = f"{algo} LoRA adapter for {base} on {what}"
    intro = ("A LoRA adapter for a vision-language model, fine-tuned with fedmllm by "
             + ("one-shot federated learning: every client trained once and uploaded once, "
                "and the server merged the uploads once." if oneshot else
                f"{algo} over {cfg.fl.rounds} federated rounds."))
    if client is not None:
        title = f"Client {client}'s local LoRA adapter ({algo}) for {base} on {what}"
        intro = (f"Client {client}'s own adapter of a local-only run: the client trained alone "
                 "on its own data (no aggregation); one such adapter per client sits in "
                 "`adapters/`.")
    out = [f"# {title}", "", intro, "", "## Training", ""]
    out += _table(_training_rows(cfg, summary, base))
    out += ["", "## Data", ""] + _table(_data_rows(cfg, manifest))
    out += ["", "## LoRA", ""] + _table(_lora_rows(cfg, summary, adapter_config))
    out += ["", "## Results", ""] + _results(summary.get("final") or {}, client)
    out += ["", "## Communication", ""] + _communication(summary.get("totals") or {})
    out += _privacy(summary.get("privacy"))
    run = adapter_dir.parent if client is None else adapter_dir.parents[1]
    out += ["", *_how_to_load(base, str(adapter_dir)),
            "To evaluate it again on the run's own test set and views: "
            f"`fedmllm eval --run {run}`"
            + (f" `--client {client}`" if client is not None else "") + ".", ""]
    if base.startswith(PRESET_SCHEME):
        out += [(f"`{base}` names fedmllm's built-in offline base model (`model.preset`); "
                "`ensure_tiny` builds it deterministically into the cache."), ""]
    out += ["## Citation", "", "The federated setting, scenarios and baselines follow FedMLLM "
            "(arXiv 2411.14717)" + (", and the one-shot methods YOCO (NeurIPS 2025)"
                                    if oneshot else "") + ":", "", *_bibtex(oneshot)]
    return _card(base, ["fedmllm", "federated-learning", "lora", algo, d.dataset], out)


def _results(final: dict, client: int | None) -> list[str]:
    """The final test metrics per modality view (of one client's adapter, when given)."""
    if client is None:
        return [("Final test metrics per modality view (the same test samples shown with both "
                "modalities, the image only and the text only):"), "", *_metric_table(final)]
    per_client = final.get("per_client") or {}
    mine = per_client.get(client) or per_client.get(str(client)) or {}
    out = [f"Final test metrics of client {client}'s adapter, per modality view:", "",
           *_metric_table(mine)]
    if isinstance(final.get("accuracy"), (int, float)):
        out += ["", (f"Over all {len(per_client)} clients: accuracy "
                    f"{final['accuracy']:.4f} (mean), std "
                    f"{final.get('accuracy_std', float('nan')):.4f}, min "
                    f"{final.get('accuracy_min', float('nan')):.4f}, max "
                    f"{final.get('accuracy_max', float('nan')):.4f}.")]
    return out


def _privacy(p: dict | None) -> list[str]:
    """The DP section: the mechanism, its settings and the epsilon spent (``summary.json``'s
    ``privacy``); nothing without a DP mechanism."""
    if not p:
        return []
    eps = p.get("epsilon")
    spent = f"{eps:.4g}" if isinstance(eps, (int, float)) else "-"
    return ["", "## Privacy", "",
            (f"- Mechanism: {p.get('mechanism')} (noise multiplier "
             f"{_fmt(p.get('noise_multiplier'))}, clipping norm "
             f"{_fmt(p.get('clipping_norm'))}, sampling {p.get('sampling')})"),
            (f"- Client-level (ε, δ) = ({spent}, {_fmt(p.get('delta'))}) after "
             f"{p.get('releases')} releases"),
            f"- Accountant: {p.get('accountant')}",
            ("- The released adapter is the noised aggregate; ε bounds what it (and every "
             "round's global model) reveals about any one client's data.")]


def _communication(totals: dict) -> list[str]:
    out = [f"- Uploaded (clients to server): {_mb(totals.get('bytes_uploaded'))}",
           f"- Downloaded (server to clients): {_mb(totals.get('bytes_downloaded'))}"]
    if isinstance(totals.get("adapter_bytes"), int):
        out.append(f"- Adapter size: {_mb(totals['adapter_bytes'])}")
    if totals.get("upload_units"):
        out.append(f"- Upload units (client uploads × layers × LoRA modules): "
                   f"{totals['upload_units']:,}")
    return out


# ----------------------------------------------------------------------------- writing

def write_model_card(run: str | Path, summary: dict | None = None, cfg=None, *,
                     on_error: str = "raise") -> list[Path]:
    """Write ``README.md`` into the run's ``adapter/`` and every ``adapters/client_<k>/``;
    return the cards written (none when the run saved no adapter).

    ``summary``/``cfg`` default to the run's ``summary.json``/``config.yaml``.
    ``on_error="warn"`` logs a failure instead of raising (the card never fails a run).
    """
    try:
        return _write(Path(run), summary, cfg)
    except Exception as e:
        if on_error != "warn":
            raise
        log.warning("model card not written: %s", e)
        return []


def _write(run: Path, summary: dict | None, cfg) -> list[Path]:
    if summary is None:
        summary = _read_json(run / "summary.json")
        if not isinstance(summary, dict):
            raise OutputError(f"{run}: no readable summary.json (is the run finished?)")
    if cfg is None:
        from ..config import load_config

        if not (run / "config.yaml").is_file():
            raise OutputError(f"{run}: not a fedmllm run folder (no config.yaml)")
        cfg = load_config(run / "config.yaml")
    manifest = _read_json(run / "data_manifest.json")
    written = []
    if (run / "adapter" / "adapter_config.json").is_file():
        card = model_card(cfg, summary, run / "adapter", manifest)
        written.append(atomic_write_text(run / "adapter" / "README.md", card))
    clients = run / "adapters"
    if clients.is_dir():
        for folder in sorted(clients.glob("client_*")):
            k = folder.name.removeprefix("client_")
            if not k.isdigit() or not (folder / "adapter_config.json").is_file():
                continue
            card = model_card(cfg, summary, folder, manifest, client=int(k))
            written.append(atomic_write_text(folder / "README.md", card))
    return written
