"""The built-in datasets, one file each (reader, test split, prompt template, kind, name), and
their registration lines (:mod:`fedmllm.data.registry`).

The order is kept: it is the order of the choices and of the multiple-choice templates
(which the built-in model's pre-training corpus walks).
"""

from __future__ import annotations

from ..registry import register_dataset
from . import crisismmd, hateful_memes, medalpaca, medical, slake, synth, vqa_rad

register_dataset(hateful_memes.SPEC)
register_dataset(crisismmd.SPEC)
register_dataset(synth.SPEC)
register_dataset(vqa_rad.SPEC)
register_dataset(slake.SPEC)
register_dataset(medalpaca.SPEC)
register_dataset(medical.SPEC)
