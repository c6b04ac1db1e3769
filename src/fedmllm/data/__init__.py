"""The data layer: sample records, readers of the real formats, the synthetic benchmark,
partitions, modality scenarios, prompt templates, prepared folders and the federated-data entry
point. Imports no torch/transformers and nothing from :mod:`fedmllm.model` (numpy, PIL,
scikit-learn; matplotlib only for stats).

One module per concept:

- :mod:`.types`: :class:`Sample`, :class:`TaskInfo`, :class:`FederatedData`, :data:`DATASETS`;
- :mod:`.errors`: :class:`DataError`, the one-line user-facing error;
- :mod:`.readers`: one reader per public dataset (Hateful Memes, CrisisMMD, VQA-RAD, SLAKE,
  MedAlpaca);
- :mod:`.synth`: the offline synthetic benchmark;
- :mod:`.partition`: Dirichlet / IID client partitions;
- :mod:`.scenarios`: the modality-heterogeneity scenarios;
- :mod:`.prompts`: the prompt templates;
- :mod:`.manifest`: the JSON description of a federated dataset;
- :mod:`.build`: the one dataset switch (:func:`federated_data`, :func:`build_federated_data`,
  :func:`prepare`);
- :mod:`.prepared`: prepared folders on disk (:func:`write_prepared`, :func:`load_prepared`);
- :mod:`.stats`: ``fedmllm data stats``.

"The FedMLLM code" in these docstrings is the public code of the FedMLLM paper
("FedMLLM: Federated Fine-tuning MLLM on Multimodal Heterogeneity Data", arXiv 2411.14717),
whose data formats, prompts and scenarios this layer reproduces.
"""

from .build import build_federated_data, federated_data, prepare
from .errors import DataError
from .prepared import load_prepared, load_prepared_client, write_prepared
from .prompts import build_prompt, to_conversation
from .stats import DataStats, data_stats
from .synth import ceilings, make_synth
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
    "data_stats",
    "federated_data",
    "load_image",
    "load_prepared",
    "load_prepared_client",
    "make_synth",
    "prepare",
    "to_conversation",
    "write_prepared",
]
