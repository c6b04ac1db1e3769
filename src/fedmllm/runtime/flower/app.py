"""The Flower App of fedmllm: ``server_app`` and ``client_app``, as ``pyproject.toml`` names them
(``[tool.flwr.app.components]``). Thin: the ServerApp is :func:`.server.serve`, the ClientApp's
handlers are in :mod:`.client` (and, for a round through SecAgg+, :mod:`.secagg`). A run
config without ``output.dir`` gets an absolute folder under the repository's ``runs/``
(:func:`.simulation.with_output_dir`), not under the working directory of whichever process
hosts the ServerApp."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .client import handle_evaluate, handle_oneshot, handle_query, handle_train
from .flwr_internals import carries_secaggplus
from .secagg import handle_secure_train, secagg_mod
from .server import serve
from .simulation import with_output_dir

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, with_output_dir(dict(context.run_config)))


@client_app.train(mods=[secagg_mod])
def train(msg: Message, context: Context) -> Message:
    if carries_secaggplus(msg.content):  # SecAgg+'s collect stage (fl.secure_aggregation)
        return handle_secure_train(msg, context)
    return handle_train(msg, context)


@client_app.train("oneshot")
def oneshot(msg: Message, context: Context) -> Message:
    return handle_oneshot(msg, context)


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    return handle_query(msg, context)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return handle_evaluate(msg, context)
