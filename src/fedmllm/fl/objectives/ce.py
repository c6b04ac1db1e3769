"""The plain task loss: nothing added, nothing sent."""

from __future__ import annotations

from ..types import ClientObjective


class CrossEntropy(ClientObjective):
    """``ce``: the task loss ``L`` alone (nothing added to the loss or the gradients, nothing
    sent with the update): local training as in FedAvg (McMahan et al., AISTATS 2017).
    No config keys."""

    name = "ce"
