"""The data layer: sample records, readers of the real formats, the synthetic benchmark,
partitions, modality scenarios, prompt templates, prepared folders and the federated-data entry
point. Imports no torch/transformers and nothing from :mod:`fedmllm.model` (numpy, PIL,
scikit-learn; matplotlib only for stats).

One module per concept:

- :mod:`.types`: :class:`Sample`, :class:`TaskInfo`, :class:`FederatedData`;
- :mod:`.errors`: :class:`DataError`, the one-line user-facing error;
- :mod:`.registry`: the dataset registry (:func:`register_dataset`, :func:`get_dataset`,
  :func:`dataset_names`), which the config, the CLI and the build read;
- :mod:`.datasets`: one file per dataset (reader, test split, prompt template, kind, name:
  Hateful Memes, CrisisMMD, the synthetic benchmark, VQA-RAD, SLAKE, MedAlpaca, ``medical``)
  and their registration lines; :mod:`.readers` gathers the readers, :mod:`.reading` what
  they share;
- :mod:`.synth`: the offline synthetic benchmark's generator;
- :mod:`.partition`: Dirichlet / IID client partitions;
- :mod:`.scenarios`: the modality-heterogeneity scenarios;
- :mod:`.prompts`: the prompt templates;
- :mod:`.manifest`: the JSON description of a federated dataset;
- :mod:`.build`: the federated data of any registered dataset (:func:`federated_data`,
  :func:`build_federated_data`, :func:`prepare`), one client's samples alone
  (:func:`build_client_data`, what a federation site builds) and the server's test side
  (:func:`build_test_data`);
- :mod:`.prepared`: prepared folders on disk (:func:`write_prepared`, :func:`load_prepared`);
- :mod:`.stats`: ``fedmllm data stats``;
- :mod:`.flip`: label flipping, a malicious client's data poisoning (:func:`flip_labels`).

"The FedMLLM code" in these docstrings is the public code of the FedMLLM paper
("FedMLLM: Federated Fine-tuning MLLM on Multimodal Heterogeneity Data", arXiv 2411.14717),
whose data formats, prompts and scenarios this layer reproduces.
"""

from . import datasets  # noqa: F401  (registers the built-in datasets first)
from .build import (
    build_client_data,
    build_federated_data,
    build_test_data,
    federated_data,
    prepare,
)
from .errors import DataError
from .flip import flip_labels
from .prepared import load_prepared, load_prepared_client, write_prepared
from .prompts import build_prompt, to_conversation
from .registry import (
    DatasetOption,
    DatasetSpec,
    dataset_names,
    get_dataset,
    read_split,
    register_dataset,
    unregister_dataset,
)
from .stats import DataStats, data_stats
from .synth import ceilings, make_synth
from .types import MODALITIES, FederatedData, Sample, TaskInfo, load_image

__all__ = [
    "MODALITIES",
    "DataError",
    "DataStats",
    "DatasetOption",
    "DatasetSpec",
    "FederatedData",
    "Sample",
    "TaskInfo",
    "build_client_data",
    "build_federated_data",
    "build_prompt",
    "build_test_data",
    "ceilings",
    "data_stats",
    "dataset_names",
    "federated_data",
    "flip_labels",
    "get_dataset",
    "load_image",
    "load_prepared",
    "load_prepared_client",
    "make_synth",
    "prepare",
    "read_split",
    "register_dataset",
    "to_conversation",
    "unregister_dataset",
    "write_prepared",
]
