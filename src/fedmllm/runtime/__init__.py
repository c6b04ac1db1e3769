"""Drivers of the federated core: the in-process simulator (and, later, Flower apps)."""

from .simulator import RunResult, Simulator, run_experiment

__all__ = ["RunResult", "Simulator", "run_experiment"]
