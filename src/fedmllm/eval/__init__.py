"""Evaluation: option-probability scoring, greedy generation, parsing and metrics."""

from .evaluate import VIEWS, evaluate

__all__ = ["VIEWS", "evaluate"]
