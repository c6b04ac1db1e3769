"""The data layer: sample records, readers of the real formats, the synthetic benchmark,
partitions, modality scenarios, prompt templates, prepared folders and the federated-data entry
point. Imports no torch/transformers (numpy, PIL, scikit-learn; matplotlib only for stats).
"""

from .errors import DataError
from .federated import build_federated_data, federated_data
from .prepared import DataStats, data_stats, load_prepared, prepare, write_prepared
from .prompts import build_prompt, to_conversation
from .synth import ceilings, corpus_text, make_pretrain_corpus, make_synth
from .types import MODALITIES, FederatedData, Sample, TaskInfo, load_image

__all__ = [
    "MODALITIES",
    "DataError",
    "DataStats",
    "FederatedData",
    "Sample",
    "TaskInfo",
    "build_federated_data",
    "build_prompt",
    "ceilings",
    "corpus_text",
    "data_stats",
    "federated_data",
    "load_image",
    "load_prepared",
    "make_pretrain_corpus",
    "make_synth",
    "prepare",
    "to_conversation",
    "write_prepared",
]
