"""LoRA key helpers shared by every one-shot merge: roles (``A``/``B``), modules, A/B pairs,
and the example weights of the clients."""

from __future__ import annotations

from collections.abc import Sequence

from ..types import StateDict

_LORA_TAGS = ("lora_A", "lora_B")


def lora_role(key: str) -> str | None:
    """``"A"`` / ``"B"`` for keys holding a LoRA ``lora_A`` / ``lora_B`` tensor, else ``None``.

    Matches the path segment exactly (``...q_proj.lora_A.weight`` and the live-model form
    ``...q_proj.lora_A.default.weight``); ``lora_embedding_A`` and friends are not matched.
    """
    parts = key.split(".")
    if "lora_A" in parts:
        return "A"
    if "lora_B" in parts:
        return "B"
    return None


def lora_module(key: str) -> str | None:
    """The module a LoRA key belongs to: the text before ``.lora_A``/``.lora_B``, else ``None``.

    ``base_model.model.layers.3.self_attn.q_proj.lora_A.weight`` -> ``...layers.3.self_attn.q_proj``
    """
    parts = key.split(".")
    for tag in _LORA_TAGS:
        if tag in parts:
            return ".".join(parts[: parts.index(tag)])
    return None


def lora_pairs(state: StateDict) -> dict[str, tuple[str, str]]:
    """``module -> (A key, B key)`` for every LoRA module of ``state`` (in key order).

    Raises ``ValueError`` when a module has an ``A`` without a ``B`` (or the reverse), or when
    the two do not chain (``A``: r x in and ``B``: out x r).
    """
    found: dict[tuple[str, str], dict[str, str]] = {}
    for key in state:
        role = lora_role(key)
        if role is None:
            continue
        tag = "lora_" + role
        parts = key.split(".")
        i = parts.index(tag)
        # pair on (module, suffix) so "lora_A.default.weight" meets "lora_B.default.weight"
        ident = (".".join(parts[:i]), ".".join(parts[i + 1 :]))
        found.setdefault(ident, {})[role] = key
    pairs: dict[str, tuple[str, str]] = {}
    for (module, _suffix), roles in found.items():
        if set(roles) != {"A", "B"}:
            have = next(iter(roles.values()))
            raise ValueError(f"LoRA tensor {have!r} has no matching lora_A/lora_B partner")
        a, b = state[roles["A"]], state[roles["B"]]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"LoRA module {module!r}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                "do not chain (expected A: r x in, B: out x r)"
            )
        if module in pairs:
            raise ValueError(f"LoRA module {module!r} appears with two different suffixes")
        pairs[module] = (roles["A"], roles["B"])
    return pairs


def client_weights(num_examples: Sequence[int], weighted: bool = True) -> list[float]:
    """``w_i = n_i / sum_j n_j`` (``weighted``) or ``1/N``; raises on non-positive counts."""
    counts = [int(n) for n in num_examples]
    if not counts:
        raise ValueError("no client uploads to merge")
    if any(isinstance(n, bool) or n <= 0 for n in num_examples):
        raise ValueError(f"num_examples must be positive integers, got {list(num_examples)}")
    if not weighted:
        return [1.0 / len(counts)] * len(counts)
    total = float(sum(counts))
    return [n / total for n in counts]
