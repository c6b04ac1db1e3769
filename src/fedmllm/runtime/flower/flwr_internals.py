"""Every use fedmllm makes of flwr 1.42's non-public modules, in one place: the warm ClientApp.

Flower's public API is ``flwr.app``, ``flwr.clientapp`` (and ``flwr.clientapp.mod``),
``flwr.serverapp`` (and ``flwr.serverapp.strategy``) and ``flwr.simulation``. This module is
the only one in ``src/`` that imports anything else from ``flwr``
(``tests/runtime/flower/test_flower_internals.py`` checks it, and checks that every name in
:data:`PRIVATE_IMPORTS` still exists in the installed flwr); ``docs/flower-internals.md``
says what we rely on and why.

**The warm ClientApp** (:func:`serve_clientapp_tasks`). A SuperNode started with
``--isolation process`` starts no ClientApp itself: it waits for a ClientApp process to ask
its Runtime API for tasks. Flower documents ``flwr-clientapp`` for that, which runs one task
and exits, so a ClientApp that loads a vision-language model loads it again in every round.
Our worker takes the node's tasks one after the other and calls the ClientApp in-process, so
the loaded model survives from round to round. Per task it does what flwr 1.42's
``flwr.supernode.runtime.run_clientapp.run_clientapp`` does, minus the exit, through the same
task protocol: ``AcquireTask`` (``flwr.proto.runtime_pb2``, ``flwr.supercore.constant.
TaskType``), the Runtime HTTP client, its interceptors, retry invoker and TLS helper
(``flwr.supercore.*``), the task heartbeat, ``pull_task_input`` / ``push_message`` /
``push_task_output``, FAB installation (``flwr.cli.install``), ClientApp loading
(``flwr.clientapp.utils``, ``flwr.clientapp.client_app``) and the error and status codes
(``flwr.common.constant``).

**SecAgg+** (:mod:`.secagg`). Flower's SecAgg+ is public (``flwr.server.workflow.
SecAggPlusWorkflow``, ``flwr.client.mod.secaggplus_mod``) but speaks the legacy ``FitIns`` /
``FitRes`` record layout and reads its own records by names that are not: the name of the
protocol's config record (``flwr.common.secure_aggregation.secaggplus_constants``), the
workflow's round state (``flwr.server.workflow.constant``), the compat converters between the
legacy types and records (``flwr.compat.common.recorddict_compat``) and the grid's client
proxy the legacy strategy hands out (``flwr.server.compat.grid_client_proxy``).

All flwr imports here are made inside the functions, so importing this module is cheap and
imports nothing from Flower. A new flwr needs this module (and its test) checked against that
version's source.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

#: Every (module, attribute) this module imports from a non-public flwr module.
PRIVATE_IMPORTS: tuple[tuple[str, str], ...] = (
    ("flwr.proto.runtime_pb2", "AcquireTaskRequest"),
    ("flwr.supercore.app_utils", "start_parent_process_monitor"),
    ("flwr.supercore.constant", "TaskType"),
    ("flwr.supercore.interceptors", "RuntimeVersionHttpInterceptor"),
    ("flwr.supercore.interceptors", "RuntimeTokenHttpInterceptor"),
    ("flwr.supercore.retry", "make_simple_http_retry_invoker"),
    ("flwr.supercore.runtime", "RuntimeHttpClient"),
    ("flwr.supercore.tls", "validate_and_resolve_root_certificates"),
    ("flwr.cli.install", "install_from_fab"),
    ("flwr.clientapp.client_app", "LoadClientAppError"),
    ("flwr.clientapp.utils", "get_load_client_app_fn"),
    ("flwr.common.constant", "ErrorCode"),
    ("flwr.common.constant", "SubStatus"),
    ("flwr.supercore.heartbeat", "HeartbeatSender"),
    ("flwr.supercore.heartbeat", "make_task_heartbeat_fn_http"),
    ("flwr.supernode.runtime.run_clientapp", "pull_task_input"),
    ("flwr.supernode.runtime.run_clientapp", "push_message"),
    ("flwr.supernode.runtime.run_clientapp", "push_task_output"),
    ("flwr.common.secure_aggregation.secaggplus_constants", "RECORD_KEY_CONFIGS"),
    ("flwr.server.workflow.constant", "MAIN_CONFIGS_RECORD"),
    ("flwr.server.workflow.constant", "MAIN_PARAMS_RECORD"),
    ("flwr.server.workflow.constant", "Key"),
    ("flwr.compat.common.recorddict_compat", "recorddict_to_fitins"),
    ("flwr.compat.common.recorddict_compat", "fitres_to_recorddict"),
    ("flwr.server.compat.grid_client_proxy", "GridClientProxy"),
)


# ----------------------------------------------------------------------------- warm ClientApp


def serve_clientapp_tasks(
    runtime_api_address: str,
    *,
    insecure: bool,
    root_certificates: str | None = None,
    parent_pid: int | None = None,
    poll_interval: float = 0.2,
) -> None:
    """Take a SuperNode's ClientApp tasks one by one and run them in this process, forever.

    The SuperNode must run with ``--isolation process`` (it then starts no SuperExec and
    waits for someone to ask its Runtime API for tasks). Per task this does what flwr 1.42's
    ``flwr-clientapp`` does (pull the message, context, run and FAB with the task's token,
    call the ClientApp, push the reply and the context) but does not exit: the ClientApp
    module, and whatever it caches, is imported once. Exits when ``parent_pid`` dies.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    if parent_pid is not None:
        start_parent_process_monitor(parent_pid)  # SIGINT to us when the SuperNode is gone
    certificates = validate_and_resolve_root_certificates(root_certificates, insecure)
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=insecure,
        root_certificates=certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    apps: dict[str, Any] = {}  # FAB hash -> loaded ClientApp
    print(f"ClientApp worker {os.getpid()} serving {runtime_api_address}", flush=True)
    try:
        while True:
            res = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
            )
            if res.HasField("task") and res.token:
                _run_clientapp_task(
                    res.token, runtime_api_address, insecure, certificates, apps
                )
            else:
                time.sleep(poll_interval)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _task_client(token: str, runtime_api_address: str, insecure: bool,
                 certificates: bytes | None) -> tuple[Any, Any]:
    """The Runtime API client of one task (authenticated by its ``token``), and its retry
    invoker, as ``flwr-clientapp`` makes them."""
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    retry = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=insecure,
        root_certificates=certificates,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=retry,
    )
    return client, retry


def _load_clientapp(run: Any, fab: Any, apps: dict[str, Any]) -> Any:
    """The ClientApp of ``fab``, loaded once per FAB hash (its FAB unpacked under
    ``$FLWR_HOME/apps`` the first time)."""
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn

    if fab.hash_str not in apps:
        install_from_fab(fab.content, skip_prompt=True)  # no-op when already unpacked
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        apps[fab.hash_str] = load(run.fab_id, run.fab_version, fab.hash_str)
    return apps[fab.hash_str]


def _error_reply(message: Any, ex: Exception) -> tuple[Any, str]:
    """The error reply to ``message`` for the exception ``ex``, and the task's details."""
    from flwr.app import Error, Message
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.constant import ErrorCode

    details = f"{type(ex)}:<'{ex}'>"
    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    if isinstance(ex, LoadClientAppError):
        code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    reply = Message(Error(code=code, reason=details), reply_to=message) \
        if message is not None else None
    return reply, details


def _run_clientapp_task(token: str, runtime_api_address: str, insecure: bool,
                        certificates: bytes | None, apps: dict[str, Any]) -> None:
    """One task, as ``flwr.supernode.runtime.run_clientapp.run_clientapp`` minus the exit:
    pull the message, context, run and FAB; call the ClientApp (an exception becomes an
    error reply); push the reply and the context, then the task's status."""
    from flwr.common.constant import SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    client, retry = _task_client(token, runtime_api_address, insecure, certificates)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        message, context, run, fab = pull_task_input(client)
        reply = _load_clientapp(run, fab, apps)(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - reported to the ServerApp as an error reply
        traceback.print_exc()
        reply, details = _error_reply(message, ex)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        retry.max_tries = 1
        push_task_output(client=client, context=context, sub_status=sub_status,
                         details=details)
        heartbeat.stop()
        client.close()


# ----------------------------------------------------------------------------- SecAgg+


def carries_secaggplus(content: Any) -> bool:
    """Whether a message's ``RecordDict`` holds a SecAgg+ stage (the protocol's config
    record, which ``secaggplus_mod`` reads)."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    return RECORD_KEY_CONFIGS in content.config_records


def legacy_round_state(round_: int) -> Any:
    """The ``RecordDict`` a legacy workflow reads its round from: the current round in the
    main config record, an empty main parameters record (our strategy hands every node its
    own start state in its ``FitIns``)."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    return RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: round_}),
                       MAIN_PARAMS_RECORD: ArrayRecord()})


def fitins_from_content(content: Any) -> Any:
    """The legacy ``FitIns`` a SecAgg+ collect stage carries (as the workflow wrote it)."""
    from flwr.compat.common.recorddict_compat import recorddict_to_fitins

    return recorddict_to_fitins(content, keep_input=True)


def fitres_content(fitres: Any) -> Any:
    """A legacy ``FitRes`` as the reply ``RecordDict`` ``secaggplus_mod`` reads."""
    from flwr.compat.common.recorddict_compat import fitres_to_recorddict

    return fitres_to_recorddict(fitres, keep_input=False)


def node_proxy(node_id: int, grid: Any) -> Any:
    """The ``ClientProxy`` of a grid node, as Flower's legacy workflows make it (the SecAgg+
    workflow only reads its ``node_id``)."""
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    return GridClientProxy(node_id=node_id, grid=grid, run_id=0)
