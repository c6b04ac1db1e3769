"""fedmllm as a Flower App: the engine's drivers over a Flower grid (a third driver).

- :mod:`.app`: the ``ServerApp`` and ``ClientApp`` objects ``flwr run`` loads.
- :mod:`.server`: the ServerApp (the multi-round or one-shot driver with the grid's nodes as
  its clients).
- :mod:`.client`: the ClientApp's handlers (one site's data, model and local training).
- :mod:`.wire`: adapter states as ``ArrayRecord``s; :mod:`.appconfig`: the configuration as a
  Flower run config.
- :mod:`.launch`: ``fedmllm flower local``; :mod:`.local`: its federation of one SuperLink and
  N SuperNodes on this machine, built from :mod:`.federation`, :mod:`.supernodes`,
  :mod:`.runs` (``flwr run``/``log``/``list``/``stop``), :mod:`.procs` (process groups),
  :mod:`.tomlconf` (TOML files and environment) and :mod:`.certs` (TLS and node keys).
- :mod:`.flwr_internals`: the one module that imports flwr's non-public modules (the warm
  ClientApp worker), checked against the installed flwr by
  ``tests/runtime/flower/test_flower_internals.py``; ``docs/flower-internals.md`` says why.

Importing this package imports nothing from Flower; its modules do.
"""
