"""YOCO ("You Only Communicate Once", NeurIPS 2025): one-shot federated LoRA, as tensor math.

Every client starts from the same SVD factors of the frozen weight, trains once with a soft-sign
penalty pulling ``lora_B`` to the shared sign pattern and a sparsity (paper) or orthogonality
(released code) penalty on ``lora_A``, and uploads once; the server merges ``B`` with a plain
rule and ``A`` by principal-component-weighted aggregation.

- Initialization: :func:`svd_init` (+ :func:`svd_residual`), :func:`code_init`.
- Schedules: :func:`gamma_schedule` (soft-sign sharpness), :func:`orthogonal_lambda`.
- Penalties: :func:`sign_penalty`, :func:`l1_penalty`, :func:`orthogonal_penalty`, combined in
  the client objective :class:`YocoObjective` (variants :data:`YOCO_VARIANTS`).
- Server: :func:`pca_weighted_merge` (one tensor), :func:`merge_lora_uploads` (a whole upload,
  different rules for ``A``, ``B`` and other keys); product merges live in :mod:`.merge`.
- Diagnostics: :func:`sign_conflict`, :func:`conflict_matrix`, :func:`conflict_report`;
  communication: :func:`upload_units`.

Conventions: peft's layout, ``lora_A``: r x in, ``lora_B``: out x r, ``W``: out x in; LoRA keys are
recognised by a ``lora_A`` / ``lora_B`` path segment (see :func:`fedmllm.fl.merge.lora_role`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .aggregation import compute_dtype, in_compute_dtype
from .merge import client_weights, factorize, lora_module, lora_role
from .objectives import lm_layer_index
from .strategies import ALGORITHMS, make_strategy
from .types import ClientObjective, ClientUpdate, Extras, StateDict

YOCO_VARIANTS: tuple[str, ...] = ("init", "init_b", "init_ba", "full")
"""The paper's ablation ladder: SVD init only; + sign penalty on B; + sparse A; + PCA merge of A."""

A_PENALTIES: tuple[str, ...] = ("l1", "orthogonal")
"""``l1`` = the paper's ``R_sparse``; ``orthogonal`` = the released code's A regulariser."""

PCA_WEIGHTINGS: tuple[str, ...] = ("energy", "max", "mean")
"""Per-component coordinate rules of :func:`pca_weighted_merge`."""

UPLOAD_RULES: tuple[str, ...] = ("mean", "fedavg", "pca") + tuple(
    n for n in ALGORITHMS if n not in ("fedavg", "local", "zeroshot", "scaffold")
)
"""Rules accepted by :func:`merge_lora_uploads` for each key group."""



def _check_total(total: int) -> int:
    if isinstance(total, bool) or not isinstance(total, numbers.Integral) or total < 1:
        raise ValueError(f"total steps must be an integer >= 1, got {total!r}")
    return int(total)


# ----------------------------------------------------------------------------- initialization

def svd_init(W: Tensor, r: int, *, scaling: float = 1.0) -> tuple[Tensor, Tensor]:
    """YOCO's shared initial LoRA factors: the top-``r`` SVD of the frozen weight.

    With ``W = U S V^T`` (out x in, singular values decreasing) and LoRA scaling
    ``s = lora_alpha / r``::

        A0 = diag(sqrt(S_r / s)) V_r^T      (r x in)
        B0 = U_r diag(sqrt(S_r / s))        (out x r)

    so that ``s * B0 A0 = U_r S_r V_r^T`` (the best rank-``r`` approximation of ``W``). With
    ``s = 1`` (the paper's ``lora_alpha = r = 8``): ``A0 = diag(sqrt(S_r)) V_r^T``,
    ``B0 = U_r diag(sqrt(S_r))``.

    peft's ``LoraConfig(init_lora_weights="pissa")`` performs exactly this factorization (same
    ``torch.linalg.svd``, same ``S_r / s``) and also replaces the base weight by the residual
    ``W - s B0 A0`` (:func:`svd_residual`), so the wrapped model starts equal to the pre-trained
    one; the model path uses peft, this function serves tests and :func:`code_init`.
    Computed in float32 (float64 stays float64); returned in ``W``'s dtype.
    """
    scaling = float(scaling)
    if not scaling > 0:
        raise ValueError(f"scaling must be > 0, got {scaling!r}")
    a, b = factorize(in_compute_dtype(W), r)
    if scaling != 1.0:
        root = 1.0 / math.sqrt(scaling)
        a, b = a * root, b * root
    return a.to(W.dtype), b.to(W.dtype)


def svd_residual(W: Tensor, A0: Tensor, B0: Tensor, *, scaling: float = 1.0) -> Tensor:
    """The PiSSA residual base weight ``W_res = W - s B0 A0`` (so ``W_res + s B0 A0 = W``)."""
    res = in_compute_dtype(W) - float(scaling) * (in_compute_dtype(B0) @ in_compute_dtype(A0))
    return res.to(W.dtype)


def code_init(
    W: Tensor, r: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """The released code's initialization (``init = "code"``): ``B0`` from the SVD, ``A0`` random.

    ``B0 = U_r diag(sqrt(S_r))`` (as :func:`svd_init` with ``s = 1``); ``A0`` is peft's default
    LoRA-A init, ``kaiming_uniform_(a=sqrt(5))`` on an r x in tensor, i.e.
    ``A0 ~ U(-1/sqrt(in), 1/sqrt(in))``. The base weight is *not* reduced (no residual), so the
    initial model is perturbed by ``s B0 A0``; this is the code's behaviour, kept for comparison.
    """
    _, b = svd_init(W, r)
    a = torch.empty(r, W.shape[1], dtype=compute_dtype(W.dtype), device=W.device)
    torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    return a.to(W.dtype), b


# ----------------------------------------------------------------------------- schedules

def gamma_schedule(
    step: int, total: int, gamma_min: float = 1.0, gamma_max: float = 50.0
) -> float:
    """Cosine ramp of the soft-sign sharpness from ``gamma_min`` (step 0) to ``gamma_max``::

        gamma(t) = gamma_max - (gamma_max - gamma_min) * (1 + cos(pi * t / T)) / 2

    ``t = step`` clamped to ``[0, T]``, ``T = total``. Non-decreasing; ``gamma(0) = gamma_min``,
    ``gamma(T/2)`` is the midpoint, ``gamma(T) = gamma_max``. The released code uses this form
    with ``gamma_min = 1, gamma_max = 200``, ``t`` = optimizer steps done and ``T`` = the
    client's total optimizer steps.
    """
    total = _check_total(total)
    t = min(max(float(step), 0.0), float(total))
    return gamma_max - (gamma_max - gamma_min) * (1.0 + math.cos(math.pi * t / total)) / 2.0


def orthogonal_lambda(
    step: int, total: int, lam_start: float = 0.1, lam_end: float = 0.01
) -> float:
    """The released code's decaying weight of the orthogonality penalty on ``A``::

        lam_o(t) = lam_start - (lam_start - lam_end) * (1 - cos(pi * t / T)) / 2

    which equals the code's ``0.1 - (gamma(t) - 1) / (200 - 1) * (0.1 - 0.01)``: in general
    ``lam_o = lam_start - (gamma(t) - gamma_min) / (gamma_max - gamma_min) * (lam_start -
    lam_end)`` for *any* ``gamma_min < gamma_max`` of :func:`gamma_schedule`, since both follow
    the same cosine progress. ``lam_o(0) = lam_start = 0.1``, ``lam_o(T) = lam_end = 0.01``.
    """
    total = _check_total(total)
    t = min(max(float(step), 0.0), float(total))
    return lam_start - (lam_start - lam_end) * (1.0 - math.cos(math.pi * t / total)) / 2.0


# ----------------------------------------------------------------------------- penalties

def sign_penalty(B: Tensor, B_sign: Tensor, gamma: float, eps: float = 1e-6) -> Tensor:
    """YOCO's sign-consistency regulariser on ``lora_B``::

        R_sign(B) = ||tanh(gamma B) - B_s||_2 / (||B_s||_2 + eps),   B_s = sign(B0)

    (2-norms of the flattened tensors = Frobenius norms; un-squared, as in the paper's
    Algorithm 1 and the released code). Gradient, with ``D = tanh(gamma B) - B_s``::

        dR/dB = gamma (1 - tanh^2(gamma B)) * D / (||D|| (||B_s|| + eps))

    (0 where ``D = 0``). bf16/fp16 inputs are computed in float32.
    """
    b = in_compute_dtype(B)
    target = B_sign.to(device=b.device, dtype=b.dtype)
    dist = torch.linalg.vector_norm(torch.tanh(gamma * b) - target)
    return dist / (torch.linalg.vector_norm(target) + eps)


def l1_penalty(A: Tensor, lam: float) -> Tensor:
    """The paper's noise-free sparse regulariser on ``lora_A``: ``R_sparse = lam * ||A||_1``
    (sum of absolute values; subgradient ``lam * sign(A)``)."""
    a = in_compute_dtype(A)
    return lam * a.abs().sum()


def orthogonal_penalty(A: Tensor, lam_o: float) -> Tensor:
    """The released code's regulariser on ``lora_A`` (r x in): ``lam_o * ||A A^T - I_r||_F^2``.

    The code writes ``||A^T A - I_in||_F^2``; both have the same gradient
    ``4 lam_o (A A^T - I) A`` and differ by the constant ``in - r``
    (``||A^T A - I_in||^2 = tr((AA^T)^2) - 2 tr(AA^T) + in``), so this r x r form is used.
    It pushes the rows of ``A`` to be orthonormal.
    """
    a = in_compute_dtype(A)
    gram = a @ a.T
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return lam_o * (gram - eye).square().sum()


class YocoObjective(ClientObjective):
    """``yoco`` client objective: ``L = L_task + R_sign + R_A``.

    - ``R_sign = sign_weight * sum_{B keys} sign_penalty(B, sign(B0), gamma(t))`` with
      ``B0`` = the ``lora_B`` tensors of the state passed to :meth:`begin` (the shared initial
      adapter) and ``gamma(t) =`` :func:`gamma_schedule` ``(t, total_steps, gamma_min,
      gamma_max)``.
    - ``R_A = sum_{A keys} lam * ||A||_1`` (``a_penalty="l1"``, the paper) or
      ``sum_{A keys} lam_o(t) ||A A^T - I||_F^2`` (``a_penalty="orthogonal"``, the released
      code; ``lam_o(t) =`` :func:`orthogonal_lambda` ``(t, total_steps, lam_o_start,
      lam_o_end)``).

    ``variant``: ``init`` -> no penalty (:meth:`penalty` returns ``None``); ``init_b`` ->
    ``R_sign``; ``init_ba`` and ``full`` -> ``R_sign + R_A`` (``full`` differs from ``init_ba``
    only on the server: ``A`` is merged by :func:`pca_weighted_merge`).

    Step counter ``t``: reset to 0 by :meth:`begin`; every :meth:`penalty` call uses the current
    ``t`` and then advances it by one call; ``t = calls // calls_per_step`` (set
    ``calls_per_step`` to the gradient-accumulation factor so that ``t`` counts optimizer steps
    as in the released code). :meth:`set_step` pins ``t`` explicitly (the next call uses it).
    ``total_steps`` (``T``, the client's optimizer steps over its local training) may differ per
    client: pass it here or through :meth:`set_total_steps` before the first penalty.

    Keys: tensors whose path contains a ``lora_A`` / ``lora_B`` segment; others get no penalty.
    Config keys: ``variant`` (``full``), ``a_penalty`` (``l1``), ``lam`` (1e-3), ``gamma_min``
    (1), ``gamma_max`` (50), ``total_steps`` (None), ``lam_o_start`` (0.1), ``lam_o_end``
    (0.01), ``sign_weight`` (1), ``eps`` (1e-6), ``calls_per_step`` (1).
    After each :meth:`penalty`, ``last_terms`` holds ``gamma``, ``lam_o`` (orthogonal only) and
    the detached ``r_sign`` / ``r_a`` tensors, for logging.
    """

    name = "yoco"

    def __init__(
        self,
        *,
        variant: str = "full",
        a_penalty: str = "l1",
        lam: float = 1e-3,
        gamma_min: float = 1.0,
        gamma_max: float = 50.0,
        total_steps: int | None = None,
        lam_o_start: float = 0.1,
        lam_o_end: float = 0.01,
        sign_weight: float = 1.0,
        eps: float = 1e-6,
        calls_per_step: int = 1,
    ) -> None:
        if variant not in YOCO_VARIANTS:
            raise ValueError(
                f"unknown YOCO variant {variant!r}; choices: {', '.join(YOCO_VARIANTS)}"
            )
        if a_penalty not in A_PENALTIES:
            raise ValueError(f"unknown a_penalty {a_penalty!r}; choices: {', '.join(A_PENALTIES)}")
        for label, value in (
            ("lam", lam),
            ("lam_o_start", lam_o_start),
            ("lam_o_end", lam_o_end),
            ("sign_weight", sign_weight),
        ):
            if not float(value) >= 0:
                raise ValueError(f"{label} must be >= 0, got {value!r}")
        if not 0 < float(gamma_min) <= float(gamma_max):
            raise ValueError(
                f"need 0 < gamma_min <= gamma_max, got gamma_min={gamma_min!r}, "
                f"gamma_max={gamma_max!r}"
            )
        if not float(eps) > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if (
            isinstance(calls_per_step, bool)
            or not isinstance(calls_per_step, int)
            or calls_per_step < 1
        ):
            raise ValueError(f"calls_per_step must be an integer >= 1, got {calls_per_step!r}")
        self.variant, self.a_penalty = variant, a_penalty
        self.lam, self.gamma_min, self.gamma_max = float(lam), float(gamma_min), float(gamma_max)
        self.lam_o_start, self.lam_o_end = float(lam_o_start), float(lam_o_end)
        self.sign_weight, self.eps = float(sign_weight), float(eps)
        self.calls_per_step = calls_per_step
        self.total_steps = None if total_steps is None else _check_total(total_steps)
        self._signs: StateDict = {}
        self._known: frozenset[str] = frozenset()
        self._calls = 0
        self._started = False
        self.last_terms: dict[str, Any] = {}

    @property
    def uses_sign(self) -> bool:
        return self.variant != "init"

    @property
    def uses_a_penalty(self) -> bool:
        return self.variant in ("init_ba", "full")

    @property
    def step(self) -> int:
        """The step ``t`` the next :meth:`penalty` call uses."""
        return self._calls // self.calls_per_step

    def set_step(self, step: int) -> None:
        """Pin ``t`` (e.g. to the trainer's optimizer step) for the next :meth:`penalty` call."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        self._calls = int(step) * self.calls_per_step

    def set_total_steps(self, total_steps: int) -> None:
        """Set ``T`` (this client's optimizer steps over its whole local training)."""
        self.total_steps = _check_total(total_steps)

    def gamma(self, step: int | None = None) -> float:
        """``gamma(t)`` at ``step`` (default: the current ``t``)."""
        return gamma_schedule(
            self.step if step is None else step, self._total(), self.gamma_min, self.gamma_max
        )

    def _total(self) -> int:
        if self.total_steps is None:
            raise RuntimeError(
                "objective 'yoco': total_steps is not set; pass total_steps= or call "
                "set_total_steps() before training"
            )
        return self.total_steps

    def begin(self, global_state: StateDict, server_extras: Extras, client_id: int) -> None:
        self._signs = {
            k: torch.sign(t.detach())
            for k, t in global_state.items()
            if lora_role(k) == "B" and t.is_floating_point()
        }
        self._known = frozenset(global_state)
        self._calls = 0
        self._started = True
        self.last_terms = {}

    def penalty(self, params: StateDict) -> Tensor | None:
        if not self._started:
            raise RuntimeError("objective 'yoco': penalty() called before begin()")
        for key in params:
            if key not in self._known:
                raise ValueError(f"objective 'yoco': parameter {key!r} is not in the global state")
        if not (self.uses_sign or self.uses_a_penalty):
            self._calls += 1
            return None
        t, total = self.step, self._total()
        gamma = gamma_schedule(t, total, self.gamma_min, self.gamma_max)
        terms: dict[str, Any] = {"gamma": gamma}
        result: Tensor | None = None
        if self.uses_sign and self.sign_weight > 0:
            r_sign: Tensor | None = None
            for key, p in params.items():
                sign = self._signs.get(key)
                if sign is None:
                    continue
                term = sign_penalty(p, sign, gamma, self.eps)
                r_sign = term if r_sign is None else r_sign + term
            if r_sign is not None:
                r_sign = r_sign * self.sign_weight
                terms["r_sign"] = r_sign.detach()
                result = r_sign
        if self.uses_a_penalty:
            if self.a_penalty == "orthogonal":
                lam = orthogonal_lambda(t, total, self.lam_o_start, self.lam_o_end)
                terms["lam_o"] = lam
            else:
                lam = self.lam
            r_a: Tensor | None = None
            if lam > 0:
                for key, p in params.items():
                    if lora_role(key) != "A":
                        continue
                    if self.a_penalty == "orthogonal":
                        term = orthogonal_penalty(p, lam)
                    else:
                        term = l1_penalty(p, lam)
                    r_a = term if r_a is None else r_a + term
            if r_a is not None:
                terms["r_a"] = r_a.detach()
                result = r_a if result is None else result + r_a
        self._calls += 1
        self.last_terms = terms
        return result

    def end(self, params: StateDict, num_steps: int, lr: float) -> Extras:
        self._signs, self._started = {}, False
        return {}

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "variant": self.variant,
            "a_penalty": self.a_penalty,
            "lam": self.lam,
            "gamma_min": self.gamma_min,
            "gamma_max": self.gamma_max,
            "total_steps": self.total_steps,
            "sign_weight": self.sign_weight,
            "eps": self.eps,
            "calls_per_step": self.calls_per_step,
        }
        if self.a_penalty == "orthogonal":
            cfg.update(lam_o_start=self.lam_o_start, lam_o_end=self.lam_o_end)
        return cfg


# ----------------------------------------------------------------------------- PCA merge of A

def _normalized(weights: Sequence[float] | Tensor | None, n: int) -> Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).flatten().cpu()
    if w.numel() != n:
        raise ValueError(f"{w.numel()} weights for {n} tensors")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def pca_weighted_merge(
    As: Sequence[Tensor],
    weights: Sequence[float] | Tensor | None = None,
    k: float | None = None,
    center: bool = True,
    weighting: str = "energy",
    power: float = 2.0,
) -> Tensor:
    """Principal-component-weighted aggregation of the clients' ``lora_A`` (YOCO's A merge).

    Flatten client ``i``'s tensor to ``a_i`` (length ``d``) and stack ``A' = [a_1; ...; a_N]``
    (N x d); client weights ``w_i >= 0``, ``sum w_i = 1`` (``weights`` normalised; ``None`` ->
    ``1/N``). Weighted mean ``mu = sum_i w_i a_i``; base ``b = mu`` (``center=True``) or ``0``.

    PCA (weighted): ``diag(sqrt(w)) (A' - b) = U S V^T``; loadings ``P = V_k`` (d x k), the top
    ``k`` right singular vectors; coordinates ``Z_i = (a_i - b) P`` (1 x k), so component ``j``
    has weighted second moment ``sum_i w_i z_ij^2 = S_j^2`` and the plain weighted mean of the
    coordinates is ``zbar = sum_i w_i Z_i`` (``= 0`` when centred).

    Merge: a coordinate ``c_j`` per component, then::

        A_g = mu + (c - zbar) P^T

    i.e. inside the top-``k`` subspace the merged coordinates are ``c``; outside it (and the
    centre) stays at the weighted mean. ``weighting`` picks ``c_j``:

    - ``"mean"``: ``c_j = zbar_j``, so ``A_g = mu`` exactly, for every ``k`` and both
      ``center`` settings: the plain (weighted) average, for comparison.
    - ``"energy"`` (default): ``c_j = sum_i pi_ij z_ij`` with
      ``pi_ij = w_i |z_ij|^p / sum_l w_l |z_lj|^p`` (``p = power``): each component is averaged
      with the clients weighted by the share of that component's energy they carry. ``p = 0``
      is the mean; ``p -> inf`` is ``"max"``. Averaging shrinks a direction carried by one
      client by its weight; this rule keeps it. Example (centred): only client ``i`` deviates
      from the others, by ``t`` along a unit direction ``v``. Then ``mu . v = w_i t`` and on that
      component ``z_i = (1 - w_i) t``, ``z_l = -w_i t`` (``l != i``), so for ``p = 2``::

          c = sum_l w_l z_l^3 / sum_l w_l z_l^2 = (1 - 2 w_i) t,   A_g . v = (1 - w_i) t

      versus ``w_i t`` for the mean (10 equal clients: 0.9 t instead of 0.1 t). Uncentred, a
      component carried by client ``i`` alone (``z_lj = 0`` for ``l != i``) gets
      ``c_j = z_ij``: full magnitude. Components where clients disagree symmetrically still
      cancel (``c_j = 0``), as with the mean.
    - ``"max"``: ``c_j = z_{i*j}``, ``i* = argmax_{i : w_i > 0} |z_ij|`` (first index on
      ties): the most extreme client's coordinate per component.

    ``k``: ``None`` -> every component with ``S_j > 0`` (at most ``N - 1`` centred, ``N``
    uncentred, and ``d``); an integer -> ``min(k, that number)``; a float in (0, 1) -> the
    fewest components whose explained variance ``sum_{j<=k} S_j^2 / sum_j S_j^2`` reaches it.
    Components beyond ``k`` are merged by the mean. Computed in float64; returned with the
    first tensor's shape, dtype and device. The sign of each loading is arbitrary and does not
    matter (``c_j p_j`` is invariant); with tied singular values the basis inside the tied
    subspace, and hence the ``energy``/``max`` result, depends on the SVD routine.

    The paper (Eq. 5) stacks, projects, averages ``Z`` with weights it does not state, and maps
    back with ``P^T``; this is one definition that does what it says the step is for.
    """
    As = list(As)
    if not As:
        raise ValueError("pca_weighted_merge needs at least one tensor")
    shape, dtype, device = As[0].shape, As[0].dtype, As[0].device
    for i, a in enumerate(As):
        if a.shape != shape:
            raise ValueError(f"tensor {i} has shape {tuple(a.shape)}, tensor 0 {tuple(shape)}")
    if weighting not in PCA_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choices: {', '.join(PCA_WEIGHTINGS)}")
    power = float(power)
    if not power >= 0 or math.isinf(power):
        raise ValueError(f"power must be a finite number >= 0, got {power!r}")
    n = len(As)
    w = _normalized(weights, n)
    with torch.no_grad():
        X = torch.stack([a.detach().to("cpu", torch.float64).reshape(-1) for a in As])
        mu = w @ X
        Xc = X - mu if center else X
        _, S, Vh = torch.linalg.svd(w.sqrt()[:, None] * Xc, full_matrices=False)
        tol = float(S[0]) * max(X.shape) * torch.finfo(torch.float64).eps
        n_comp = int((S > tol).sum()) if float(S[0]) > 0 else 0
        kk = _resolve_k(k, S, n_comp)
        if kk == 0 or weighting == "mean":
            merged = mu
        else:
            P = Vh[:kk].T  # d x k
            Z = Xc @ P  # N x k
            zbar = w @ Z
            if weighting == "max":
                score = Z.abs().masked_fill((w == 0)[:, None], -1.0)  # weight-0 clients out
                idx = score.argmax(dim=0)
                c = Z.gather(0, idx[None, :])[0]
            else:
                mass = w[:, None] * Z.abs().pow(power)
                total = mass.sum(dim=0)
                c = torch.where(total > 0, (mass * Z).sum(dim=0) / total.clamp_min(1e-300), zbar)
            merged = mu + (c - zbar) @ P.T
    return merged.reshape(shape).to(device=device, dtype=dtype)


def _resolve_k(k: float | None, S: Tensor, n_comp: int) -> int:
    """``k`` as a number of components: ``None`` = all, int = count, float = variance share."""
    if k is None:
        return n_comp
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        return min(int(k), n_comp)
    k = float(k)
    if not 0.0 < k < 1.0:
        raise ValueError(f"a float k is an explained-variance fraction in (0, 1), got {k!r}")
    if n_comp == 0:
        return 0
    var = S[:n_comp].square()
    ratio = torch.cumsum(var, 0) / var.sum()
    return min(int((ratio < k - 1e-12).sum()) + 1, n_comp)


# ----------------------------------------------------------------------------- one-shot merge

def _group(key: str) -> str:
    role = lora_role(key)
    return "other" if role is None else role


def merge_lora_uploads(
    states: Sequence[StateDict],
    num_examples: Sequence[int],
    *,
    rule_B: str = "fedavg",
    rule_A: str = "pca",
    rule_other: str = "fedavg",
    initial: StateDict | None = None,
    params_A: Mapping[str, Any] | None = None,
    params_B: Mapping[str, Any] | None = None,
    params_other: Mapping[str, Any] | None = None,
    pca_k: float | None = None,
    pca_weighting: str = "energy",
    pca_power: float = 2.0,
    pca_center: bool = True,
    pca_sample_weighted: bool = True,
) -> StateDict:
    """YOCO's one-shot server merge of single uploads, with separate rules per key group.

    Groups: ``lora_B`` keys (``rule_B``), ``lora_A`` keys (``rule_A``), every other key, e.g.
    ``modules_to_save`` copies (``rule_other``). For one key, with the clients ``S`` that
    uploaded it, ``y_i`` their tensors and ``n_i`` their example counts:

    - ``"fedavg"``: ``sum_{i in S} n_i y_i / sum_{i in S} n_i``.
    - ``"mean"``: ``(1/|S|) sum_{i in S} y_i``.
    - ``"pca"``: :func:`pca_weighted_merge` of the ``y_i`` with ``k = pca_k``,
      ``weighting = pca_weighting``, ``power = pca_power``, ``center = pca_center`` and weights
      ``n_i`` (``pca_sample_weighted``) or equal; ``pca_weighting="mean"`` equals ``fedavg``
      (or ``mean``).
    - any other server strategy in :data:`UPLOAD_RULES` (``fedavgm``, ``fedadam``,
      ``fedadagrad``, ``fedyogi``, ``median``, ``trimmed_mean``, ``fedprox``): one application,
      ``make_strategy(rule, **params_X).aggregate(initial, updates, round=1)``; the global state
      is ``initial`` (required), the adapter every client started from (the research code
      used a fresh zero-B adapter instead: its bug 9). E.g. textbook ``fedavgm`` one-shot is
      ``x0 + D_w`` = fedavg; ``fedadam`` moves ``x0`` by ``eta_t m / (sqrt(v) + tau)``.

    ``rule_A != rule_B`` is the paper's "combine" baseline (e.g. ``rule_B="mean"``,
    ``rule_A="fedavgm"``). The YOCO variants ``init``/``init_b``/``init_ba`` merge ``A`` with a
    plain rule, ``full`` with ``"pca"``. Keys of ``initial`` that no client uploaded keep their
    initial value; non-floating tensors keep client 0's (or the initial) value.
    """
    states = list(states)
    if len(states) != len(num_examples):
        raise ValueError(f"{len(states)} states but {len(num_examples)} example counts")
    client_weights(num_examples)  # validates the counts
    counts = [int(n) for n in num_examples]
    rules = {"A": rule_A, "B": rule_B, "other": rule_other}
    params = {
        "A": dict(params_A or {}),
        "B": dict(params_B or {}),
        "other": dict(params_other or {}),
    }
    for group, rule in rules.items():
        if rule not in UPLOAD_RULES:
            raise ValueError(
                f"unknown rule {rule!r} for {group} keys; choices: {', '.join(UPLOAD_RULES)}"
            )
        if params[group] and rule in ("mean", "fedavg", "pca"):
            raise ValueError(f"rule {rule!r} takes no params (got {sorted(params[group])})")
    keys: list[str] = []
    for st in states:
        keys.extend(k for k in st if k not in keys)
    for key in keys:
        ref = next(st[key] for st in states if key in st)
        for i, st in enumerate(states):
            if key in st and st[key].shape != ref.shape:
                raise ValueError(
                    f"client {i}: {key!r} has shape {tuple(st[key].shape)}, expected "
                    f"{tuple(ref.shape)}"
                )
        if initial is not None and key in initial and initial[key].shape != ref.shape:
            raise ValueError(f"initial {key!r} has shape {tuple(initial[key].shape)}")
    out: StateDict = dict(initial) if initial is not None else {}
    by_group: dict[str, list[str]] = {"A": [], "B": [], "other": []}
    for key in keys:
        by_group[_group(key)].append(key)
    with torch.no_grad():
        for group, gkeys in by_group.items():
            if not gkeys:
                continue
            rule = rules[group]
            if rule in ("mean", "fedavg", "pca"):
                for key in gkeys:
                    holders = [i for i, st in enumerate(states) if key in st]
                    tensors = [states[i][key] for i in holders]
                    if not tensors[0].is_floating_point():
                        out[key] = (
                            initial[key] if initial is not None and key in initial else tensors[0]
                        )
                        continue
                    cw = [float(counts[i]) for i in holders]
                    if rule == "pca":
                        out[key] = pca_weighted_merge(
                            tensors,
                            cw if pca_sample_weighted else None,
                            k=pca_k,
                            center=pca_center,
                            weighting=pca_weighting,
                            power=pca_power,
                        )
                        continue
                    if rule == "mean":
                        cw = [1.0] * len(tensors)
                    total = sum(cw)
                    acc = sum(c / total * in_compute_dtype(t) for c, t in zip(cw, tensors, strict=True))
                    out[key] = acc.to(tensors[0].dtype)
                continue
            if initial is None:
                raise ValueError(
                    f"rule {rule!r} steps from the initial adapter: pass initial= (the state "
                    "every client started from)"
                )
            missing = [k for k in gkeys if k not in initial]
            if missing:
                raise ValueError(f"initial state lacks {missing[0]!r} (rule {rule!r})")
            strategy = make_strategy(rule, **params[group])
            glob = {k: initial[k] for k in gkeys}
            updates = [
                ClientUpdate(
                    state={k: st[k] for k in gkeys if k in st}, num_examples=n, client_id=i
                )
                for i, (st, n) in enumerate(zip(states, counts, strict=True))
            ]
            out.update(strategy.aggregate(glob, updates, 1))
    return out


# ----------------------------------------------------------------------------- diagnostics

def _sign_stack(tensors: Sequence[Tensor]) -> Tensor:
    tensors = list(tensors)
    if len(tensors) < 2:
        raise ValueError(f"sign conflicts need at least 2 clients, got {len(tensors)}")
    flat = [t.detach().reshape(-1).to("cpu") for t in tensors]
    m = flat[0].numel()
    if m == 0 or any(f.numel() != m for f in flat):
        raise ValueError("sign conflicts need non-empty tensors of equal size")
    return torch.stack([torch.sign(f.to(torch.float64)) for f in flat])  # N x M, in {-1, 0, 1}


def sign_conflict(tensors: Sequence[Tensor]) -> dict[str, float]:
    """The paper's sign-conflict rates among ``N`` clients' tensors over ``M`` coordinates.

    Per coordinate ``m``: ``k_m^+`` / ``k_m^-`` = clients with a positive / negative value
    (zeros have no sign and conflict with nothing). Then::

        rho_bar = 2 / (M N (N-1)) * sum_m k_m^+ k_m^-
        C       = 1 / (M N)       * sum_m min(k_m^+, k_m^-)          in [0, 0.5]

    ``rho_bar`` is the mean over the ``N(N-1)/2`` client pairs of the pairwise rate
    ``rho_ab = #{m : sign(x_am) sign(x_bm) = -1} / M`` (:func:`conflict_matrix`), since
    ``k^+ k^-`` counts the opposite-sign pairs at a coordinate. ``C`` is the mean minority
    fraction. Without zeros (``k^- = N - k^+``) both are exactly the paper's
    ``2/(MN(N-1)) sum k_m (N - k_m)`` and ``1/(MN) sum min(k_m, N - k_m)``.
    Returns ``{"rho_bar", "C", "num_params": M, "num_clients": N}``.
    """
    s = _sign_stack(tensors)
    n, m = s.shape
    pos = (s > 0).sum(0).to(torch.float64)
    neg = (s < 0).sum(0).to(torch.float64)
    rho = float((pos * neg).sum()) * 2.0 / (m * n * (n - 1))
    c = float(torch.minimum(pos, neg).sum()) / (m * n)
    return {"rho_bar": rho, "C": c, "num_params": m, "num_clients": n}


def conflict_matrix(tensors: Sequence[Tensor]) -> Tensor:
    """``N x N`` float64 matrix of pairwise sign-conflict rates ``rho_ab`` (zero diagonal)::

        rho_ab = #{m : sign(x_am) sign(x_bm) = -1} / M
    """
    s = _sign_stack(tensors)
    pos, neg = (s > 0).to(torch.float64), (s < 0).to(torch.float64)
    opp = pos @ neg.T
    return (opp + opp.T) / s.shape[1]


def conflict_report(
    states: Sequence[StateDict], initial: StateDict | None = None
) -> dict[str, dict[str, float]]:
    """:func:`sign_conflict` of all ``lora_A`` and of all ``lora_B`` coordinates across clients.

    Per role, each client's tensors under the keys every client uploaded are concatenated (in
    sorted key order) into one vector; ``M`` counts all of them. With ``initial`` the signs are
    those of the updates ``y_i - x0`` instead of the uploaded tensors (the paper measures the
    trained tensors themselves: the default). Returns ``{"lora_A": {...}, "lora_B": {...}}``
    (a role without keys is left out; ``{}`` for fewer than 2 clients).
    """
    states = list(states)
    if len(states) < 2:
        return {}
    common = sorted(set(states[0]).intersection(*map(set, states[1:])))
    report: dict[str, dict[str, float]] = {}
    for role in ("A", "B"):
        keys = [k for k in common if lora_role(k) == role]
        if not keys:
            continue
        vecs = []
        for st in states:
            parts = []
            for k in keys:
                t = st[k].detach().to(torch.float64)
                if initial is not None:
                    t = t - initial[k].detach().to(t)
                parts.append(t.reshape(-1).cpu())
            vecs.append(torch.cat(parts))
        report["lora_" + role] = sign_conflict(vecs)
    return report


def upload_units(state: StateDict, *, rounds: int = 1) -> dict[str, Any]:
    """Communication cost of one upload (one client, one round) of ``state``, times ``rounds``.

    - ``bytes`` = ``rounds * sum_k numel_k * element_size_k`` (as stored, every key), split into
      ``lora_bytes`` and ``other_bytes`` (``modules_to_save`` copies and the like);
      ``lora_params`` = LoRA elements per upload.
    - The paper's unit "rounds x layers x LoRA modules": ``lora_modules`` = distinct modules
      (the key with ``.lora_A...``/``.lora_B...`` stripped), ``layers`` = distinct
      language-model layers among them (:func:`fedmllm.fl.lm_layer_index`; a module outside the
      language model counts by its parent path), ``module_types`` = distinct module names
      (``q_proj``, ...); ``units = rounds * lora_modules`` and ``unit = "R x L x T"`` as text.
      YOCO uploads one module once: ``units = 1``, ``"1x1x1"``; 25 rounds of q/k/v/o LoRA on
      28 layers: ``"25x28x4"`` = 2800 units.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    lora_bytes = other_bytes = lora_params = 0
    modules: set[str] = set()
    layers: set[Any] = set()
    types: set[str] = set()
    for key, t in state.items():
        size = t.numel() * t.element_size()
        module = lora_module(key)
        if module is None:
            other_bytes += size
            continue
        lora_bytes += size
        lora_params += t.numel()
        modules.add(module)
        parent, _, leaf = module.rpartition(".")
        types.add(leaf)
        layer = lm_layer_index(key)
        layers.add(("lm", layer) if layer is not None else ("path", parent))
    r = int(rounds)
    return {
        "bytes": r * (lora_bytes + other_bytes),
        "lora_bytes": r * lora_bytes,
        "other_bytes": r * other_bytes,
        "lora_params": lora_params,
        "lora_modules": len(modules),
        "layers": len(layers),
        "module_types": len(types),
        "rounds": r,
        "units": r * len(modules),
        "unit": f"{r}x{len(layers)}x{len(types)}",
    }
