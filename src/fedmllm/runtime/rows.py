"""The rows of ``metrics.jsonl`` and the ``summary.json`` of every driver, built in one place.

A multi-round run writes one :func:`round_row` per round and ends with
:func:`multiround_summary`; a one-shot run writes one :func:`oneshot_row` (with the YOCO study's
:func:`oneshot_diagnostics`) and ends with :func:`oneshot_summary`. Per-client columns are
``{"<client id>": value}`` dicts (:func:`per_client`) over the updates that arrived, and the
bytes are those counted on the wire where an executor measured them (:func:`wire_bytes`),
else those of the server round.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

from ..engine.server import RoundResult, state_bytes
from ..fl import ClientUpdate, conflict_report, upload_units
from ..fl.oneshot.keys import lora_pairs
from .executor import ClientReply, wire_bytes


def per_client(updates: Sequence[ClientUpdate], key: str,
               fn: Callable = lambda v: v) -> dict[str, object]:
    """``{"<client id>": fn(metrics[key])}`` over the updates that have ``key``."""
    return {str(u.client_id): fn(u.metrics[key]) for u in updates if key in u.metrics}


def _loss(v: float) -> float:
    return round(v, 6)


def mean_loss(updates: Sequence[ClientUpdate]) -> float | None:
    """The clients' mean training loss (``None`` without updates)."""
    return statistics.fmean(u.metrics["train_loss"] for u in updates) if updates else None


def round_row(r: int, clients: list, lr: float, replies: Sequence[ClientReply],
              outcome: RoundResult, evaluation: dict, seconds: float,
              train_seconds: float, privacy_epsilon: float | None = None) -> dict:
    """Round ``r``'s row: who was asked (``clients``; ``["all"]`` for centralized training),
    the clients' losses and steps, the bytes, what the server rejected or skipped, who did not
    reply, the remote clients' own seconds, the privacy spent so far (``privacy_epsilon``, at
    ``fl.privacy.delta``, with a DP mechanism), ``evaluation`` (``eval``/``client_eval`` on an
    evaluation round) and the timings."""
    updates = [rep.update for rep in replies if rep.update is not None]
    up, down = wire_bytes(replies)
    row = {
        "round": r, "clients": clients, "lr": lr,
        "train_loss": per_client(updates, "train_loss", _loss),
        "train_loss_mean": mean_loss(updates),
        "local_steps": per_client(updates, "steps"),
        "bytes_uploaded": outcome.bytes_uploaded if up is None else up,
        "bytes_downloaded": outcome.bytes_downloaded if down is None else down,
        "rejected": [{"client": c, "reason": why} for c, why in outcome.rejected],
        "skipped": outcome.skipped,
    }
    dropped = [rep.client_id for rep in replies if rep.update is None]
    if dropped:
        row["dropped"] = dropped
    if any("client_seconds" in u.metrics for u in updates):  # measured by remote clients
        row["client_seconds"] = per_client(updates, "client_seconds", lambda v: round(v, 3))
    if privacy_epsilon is not None:
        row["privacy_epsilon"] = privacy_epsilon
    row.update(evaluation)
    row["seconds"] = round(seconds, 4)
    row["train_seconds"] = round(train_seconds, 4)
    return row


def compute(rows: Sequence[dict]) -> dict:
    """The run's compute, from its rows: ``client_steps``, the optimizer steps every client ran
    in every round (for a one-shot client that picked among candidates, every candidate's:
    ``local_steps_tried``), and ``client_runs``, the local runs (a client in a round)."""
    steps = [r.get("local_steps_tried", {}).get(k, n)
             for r in rows for k, n in r.get("local_steps", {}).items()]
    return {"client_steps": sum(steps), "client_runs": len(steps)}


def multiround_summary(algorithm: str, resolved: dict, final: dict, rows: list[dict], *,
                       rounds: int, count_uploads: bool, setup_seconds: float,
                       global_state: dict, resumes: list[int],
                       privacy: dict | None = None) -> dict:
    """``summary.json`` of a multi-round run: the final metrics, the run's totals
    (``count_uploads``: whether the clients' updates count as uploads in the YOCO paper's
    unit, client uploads x layers x LoRA modules; not for local-only or centralized), its
    :func:`compute` and, with a DP mechanism, the ``privacy`` spent (epsilon, delta, the
    accountant, the settings)."""
    uploads = sum(len(r["clients"]) for r in rows) if count_uploads else 0
    totals = {
        "rounds": rounds,
        "bytes_uploaded": sum(r["bytes_uploaded"] for r in rows),
        "bytes_downloaded": sum(r["bytes_downloaded"] for r in rows),
        "train_seconds": round(sum(r["train_seconds"] for r in rows), 3),
        "setup_seconds": round(setup_seconds, 3),
        "adapter_bytes": state_bytes(global_state),
        "upload_units": uploads * upload_units(global_state)["units"],
        "skipped_rounds": [r["round"] for r in rows if r.get("skipped")],
        "resumed_after_rounds": resumes,
    }
    out = {"algorithm": algorithm, "resolved": resolved, "final": final, "totals": totals,
           "compute": compute(rows)}
    if privacy is not None:
        out["privacy"] = privacy
    return out


# ----------------------------------------------------------------------------- one-shot

def lora_drift(state: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]) -> dict:
    """How far a client's upload moved from the shared start, over all its LoRA modules:
    ``dB_rel = ||B - B0|| / ||B0||`` and ``dW_rel = ||B A - B0 A0|| / ||B0 A0||`` (Frobenius
    norms over the modules together; ``None`` where the start is zero, as for zero-B LoRA,
    with the absolute ``dB``/``dW`` beside them)."""
    db2 = b02 = dw2 = w02 = 0.0
    for ka, kb in lora_pairs(state).values():
        a, b = state[ka].double(), state[kb].double()
        a0, b0 = initial[ka].double().to(a.device), initial[kb].double().to(a.device)
        db2 += float((b - b0).square().sum())
        b02 += float(b0.square().sum())
        w0 = b0 @ a0
        dw2 += float((b @ a - w0).square().sum())
        w02 += float(w0.square().sum())
    return {"dB": db2 ** 0.5, "dW": dw2 ** 0.5,
            "dB_rel": (db2 / b02) ** 0.5 if b02 > 0 else None,
            "dW_rel": (dw2 / w02) ** 0.5 if w02 > 0 else None}


def oneshot_diagnostics(updates: Sequence[ClientUpdate], initial: dict[str, torch.Tensor],
                        spectrum: dict | None) -> dict:
    """The YOCO study's columns: every client's drift from the shared start, the sign
    conflicts of the uploads and of the updates, and the base's spectrum at the LoRA rank."""
    states = [u.state for u in updates]
    return {"drift": {str(u.client_id): lora_drift(u.state, initial) for u in updates},
            "conflict": conflict_report(states),
            "conflict_update": conflict_report(states, initial),
            "spectrum": spectrum}


def oneshot_bytes(method: str, updates: Sequence[ClientUpdate],
                  merged: dict[str, torch.Tensor]) -> tuple[int, int]:
    """``(uploaded, downloaded)``: one upload per client; every client receives the result
    once (the merged adapter, rank ``N r`` for the lossless product average; every client's
    adapter for the ensemble); local-only models send and receive nothing."""
    if method == "local":
        return 0, 0
    uploaded = sum(state_bytes(u.state) for u in updates)
    return uploaded, len(updates) * (uploaded if method == "ensemble" else state_bytes(merged))


def oneshot_row(y, init: str, lr: float, updates: Sequence[ClientUpdate], *,
                merged: dict[str, torch.Tensor], final: dict, diagnostics: dict,
                loaded_from: str | None, dropped: list[int], seconds: dict) -> dict:
    """The one row of a one-shot run (``y`` = ``cfg.fl.yoco``): every client's steps,
    epochs, loss, held-out split and losses, learning rate; the bytes and upload units
    (:func:`~fedmllm.fl.upload_units`); :func:`oneshot_diagnostics`; the ensemble's cost;
    the clients with no upload; the evaluation ``final`` and the ``seconds`` (``eval``,
    ``train``, in all)."""
    units = upload_units(updates[0].state)
    personal = y.method == "local"
    uploaded, downloaded = oneshot_bytes(y.method, updates, merged)
    row: dict = {
        "round": 1, "method": y.method, "init": init,
        "variant": y.variant if y.method == "yoco" else None,
        "clients": [u.client_id for u in updates], "lr": lr,
        "local_steps": per_client(updates, "steps"),
        "local_epochs": per_client(updates, "epochs"),
        "local_steps_tried": per_client(updates, "steps_tried"),
        "train_loss": per_client(updates, "train_loss", _loss),
        "train_loss_mean": mean_loss(updates),
        "bytes_uploaded": uploaded, "bytes_downloaded": downloaded,
        "bytes_uploaded_per_client": 0 if personal else units["bytes"],
        "upload_units": 0 if personal else len(updates) * units["units"],
        "upload_unit": units["unit"],
        "lora_params_per_client": units["lora_params"],
        "held_out": {str(u.client_id): u.metrics["held_out"] for u in updates
                     if u.metrics.get("held_out")},
        "val_loss": per_client(updates, "val_loss",
                               lambda v: {c: round(x, 6) for c, x in v.items()}),
        "uploads_loaded_from": loaded_from,
        "client_lr": {str(u.client_id): u.metrics.get("lr", lr) for u in updates},
        **diagnostics,
    }
    if y.method == "ensemble":
        row["ensemble_cost"] = {"forward_passes_per_sample": len(updates),
                                "adapters_stored_bytes": sum(state_bytes(u.state)
                                                             for u in updates)}
    if dropped:
        row["dropped"] = dropped
    row["eval"] = final
    row["eval_seconds"] = round(seconds["eval"], 4)
    row["train_seconds"] = round(seconds["train"], 4)
    row["seconds"] = round(seconds["all"], 4)
    return row


def oneshot_summary(algorithm: str, resolved: dict, final: dict, row: dict, *,
                    setup_seconds: float, merged: dict[str, torch.Tensor],
                    resumes: list[int]) -> dict:
    """``summary.json`` of a one-shot run: the final metrics, the uploads' sign conflicts,
    the run's totals, :func:`compute` and under ``oneshot`` the merge (``method``, and
    ``fedopt_step``, the adaptive rules' first step, ``None`` where no rule is adaptive; from
    its one ``row``)."""
    totals = {
        "rounds": 1, "bytes_uploaded": row["bytes_uploaded"],
        "bytes_downloaded": row["bytes_downloaded"],
        "upload_units": row["upload_units"], "upload_unit": row["upload_unit"],
        "train_seconds": row["train_seconds"], "setup_seconds": round(setup_seconds, 3),
        "adapter_bytes": state_bytes(merged),
        "resumed_after_clients": resumes,
    }
    return {"algorithm": algorithm, "method": row["method"], "resolved": resolved,
            "final": final, "conflict": row["conflict"], "totals": totals,
            "compute": compute([row]),
            "oneshot": {"method": row["method"], "fedopt_step": row.get("fedopt_step")}}
