"""fedmllm: federated LoRA fine-tuning of vision-language models on modality-heterogeneous
clients."""

__version__ = "0.1.0"
