"""The one core every driver uses.

- :mod:`.factory`: configuration -> checked :class:`~.factory.RunPlan` (the model's source,
  device and precision resolved too), strategy, objective.
- :mod:`.bundle`: the model a run trains, built from its plan in one pass (base -> LoRA ->
  init), adapter saving.
- :mod:`.client`: :class:`~.client.ClientTrainer`, one client's local loop.
- :mod:`.server`: :class:`~.server.ServerRound`, validate -> aggregate -> check -> count.
- :mod:`.state`: :class:`~.state.ClientStateStore`, what each client keeps between rounds.
- :mod:`.checkpoint`: atomic checkpoints and their loading.

Submodules are imported where they are used (``from fedmllm.engine.client import ...``), so
that checking a configuration does not load transformers.
"""
