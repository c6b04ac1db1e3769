"""Prepared folders that hold only part of a federated dataset: a node's (its own client file)
or a server's (the test side), for the tests of a server that holds no client data."""

from __future__ import annotations

from pathlib import Path


def prepared_part(folder: Path, keep: tuple[str, ...], seed: int, num_clients: int,
                  **options) -> Path:
    """``fedmllm prepare`` into ``folder``, then everything removed but ``manifest.json``, the
    files named in ``keep`` (``client_1.json``, ``test.json``) and the images they name."""
    from fedmllm.data import prepare

    prepare(folder, num_clients=num_clients, seed=seed, **options)
    kept = "".join((folder / name).read_text() for name in keep)
    for path in folder.iterdir():
        if path.name == "images":
            for image in path.iterdir():
                if image.name not in kept:
                    image.unlink()
        elif path.name not in (*keep, "manifest.json"):
            path.unlink()
    return folder
