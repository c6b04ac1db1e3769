"""By-hand references for the product merges, written independently of fedmllm's code."""

import torch


def ties_by_hand(taus, weights, density):
    """TIES (Yadav et al., 2023): magnitude-trim each tau_i to ``density`` (top-k by |value|),
    elect the sign of the summed trimmed values (0 counts as +), then the disjoint mean of the
    agreeing clients weighted by ``weights``: sum_{i agrees} w_i tau_i / sum_{i agrees} w_i
    (0 where nobody agrees)."""
    trimmed = []
    for t in taus:
        k = int(density * t.numel())
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        keep[t.abs().reshape(-1).topk(k).indices] = True
        trimmed.append(t * keep.reshape(t.shape))
    stack = torch.stack(trimmed)
    elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0).to(stack)
    agree = (torch.sign(stack) == elected).to(stack)
    wa = agree * torch.as_tensor(weights).to(stack)[:, None, None]
    den = wa.sum(0)
    return torch.where(den > 0, (wa * stack).sum(0) / den.clamp_min(1e-300), 0.0)
