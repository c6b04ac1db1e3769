"""The one-shot merge registry: a merge rule is a function that registers itself where it is
defined (``@register_merge(kind, name)``), as peft's ``register_peft_method`` does for tuners.

Two kinds, one per merge family:

- ``"key"``: a per-key rule of :func:`~fedmllm.fl.oneshot.merge_lora_uploads`,
  ``rule(tensors, counts, options) -> Tensor`` over the tensors the clients uploaded for one
  key, their example counts and the merge's ``pca_*`` options (``fedavg``, ``mean``, ``pca``
  in :mod:`.factor`). The server strategies are rules of that merge too, applied once from
  the initial adapter (:data:`~fedmllm.fl.oneshot.UPLOAD_RULES`).
- ``"product"``: a task-vector merge of :func:`~fedmllm.fl.oneshot.merge_lora_products`,
  ``rule(taus, weights, density, majority_sign_method) -> Tensor`` with the weights as a
  tensor, run under the module's DARE seed (``task_arithmetic``, ``magnitude_prune``,
  ``ties``, ``dare_linear``, ``dare_ties`` in :mod:`.product`; ``exact`` is the product
  merge's own lossless path).

:func:`get_merge` finds one (a ``ValueError`` with "did you mean" otherwise),
:func:`merge_names` lists a kind's names in registration order.
"""

from __future__ import annotations

from collections.abc import Callable

from ..checks import lookup

KINDS = ("key", "product")

_MERGES: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}

__all__ = ["KINDS", "get_merge", "merge_names", "register_merge"]


def register_merge(kind: str, name: str) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated function as merge rule ``name`` of ``kind``; a name
    already taken is refused."""
    rules = lookup(_MERGES, "merge kind", kind)
    if name in rules:
        raise ValueError(f"{kind} merge {name!r} is already registered")

    def add(fn: Callable) -> Callable:
        rules[name] = fn
        return fn

    return add


def get_merge(kind: str, name: str) -> Callable:
    """The ``kind`` merge rule registered as ``name``."""
    return lookup(lookup(_MERGES, "merge kind", kind), f"{kind} merge", name)


def merge_names(kind: str) -> tuple[str, ...]:
    """The ``kind`` merge rules, in registration order."""
    return tuple(lookup(_MERGES, "merge kind", kind))
