"""fedmllm as a Flower App: the engine's drivers over a Flower grid (a third driver).

- :mod:`.app`: the ``ServerApp`` and ``ClientApp`` objects ``flwr run`` loads.
- :mod:`.server`: the ServerApp (the multi-round or one-shot driver with the grid's nodes as
  its clients).
- :mod:`.client`: the ClientApp's handlers (one site's data, model and local training).
- :mod:`.wire`: adapter states as ``ArrayRecord``s; :mod:`.appconfig`: the configuration as a
  Flower run config.
- :mod:`.local`: a federation of one SuperLink and N SuperNodes on this machine
  (``fedmllm flower local``).
- :mod:`.fastnode`: ``flower-supernode`` with shorter polls, for :mod:`.local`.
- :mod:`.flwr_internals`: the one module that imports flwr's non-public modules (the warm
  ClientApp worker and the SuperNode poll patch), checked against the installed flwr by
  ``tests/test_flower_internals.py``.

Importing this package imports nothing from Flower; its modules do.
"""
