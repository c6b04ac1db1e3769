"""Every use fedmllm makes of flwr 1.42's non-public modules, in one place.

Flower's public API is ``flwr.app``, ``flwr.clientapp`` (and ``flwr.clientapp.mod``),
``flwr.serverapp`` (and ``flwr.serverapp.strategy``) and ``flwr.simulation``. Two things
``fedmllm flower local`` does need more than that, and this module is the only one in ``src/``
that imports anything else from ``flwr`` (``tests/test_flower_internals.py`` checks it, and
checks that every name in :data:`PRIVATE_IMPORTS` still exists in the installed flwr):

* **A warm ClientApp** (:func:`serve_clientapp_tasks`). Stock flwr 1.42 runs each message to a
  SuperNode in a fresh ``flwr-clientapp`` process that exits after replying, so a ClientApp
  that loads a vision-language model loads it again in every round. Our worker takes a
  SuperNode's tasks from its Runtime API (the SuperNode runs with ``--isolation process``) and
  calls the ClientApp in-process, one task after the other, so the loaded model survives from
  round to round. It is a copy of flwr 1.42's ``run_clientapp`` loop
  (``flwr.supernode.runtime.run_clientapp``) minus the exit, and relies on its task protocol:
  ``AcquireTask`` (``flwr.proto.runtime_pb2``, ``flwr.supercore.constant.TaskType``), the
  Runtime HTTP client, its interceptors, retry invoker and TLS helper
  (``flwr.supercore.*``), the task heartbeat, ``pull_task_input`` / ``push_message`` /
  ``push_task_output``, FAB installation (``flwr.cli.install``), ClientApp loading
  (``flwr.clientapp.utils``, ``flwr.clientapp.client_app``) and the error and status codes
  (``flwr.common.constant``).
* **A shorter SuperNode poll on loopback** (:func:`run_fast_supernode`). A flwr 1.42 SuperNode
  that finds no message waiting sleeps 3 s (:data:`IDLE_SLEEP`) before asking its SuperLink
  again, and looks for its ClientApp's reply every 0.5 s (:data:`REPLY_SLEEP`), with literal
  ``time.sleep(3)`` / ``time.sleep(0.5)`` calls in ``flwr.supernode.start_client_internal``:
  every round waits up to 3.5 s on top of the training. Where a request costs nothing (one
  machine) we replace that module's ``time`` by a copy whose ``sleep`` shortens exactly those
  two durations, then run the stock ``flower-supernode`` CLI
  (``flwr.supernode.cli.flower_supernode``). A real deployment runs the stock SuperNode.

All flwr imports here are made inside the functions, so importing this module is cheap and
imports nothing from Flower. pyproject pins ``flwr<1.43``; a new flwr needs this module (and
its test) checked against that version's source.
"""

from __future__ import annotations

import os
import sys
import time
import types
from typing import Any

#: Every (module, attribute) this module imports from a non-public flwr module.
PRIVATE_IMPORTS: tuple[tuple[str, str], ...] = (
    # the warm ClientApp's task loop
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
    # the SuperNode with shorter polls
    ("flwr.supernode", "start_client_internal"),
    ("flwr.supernode.cli", "flower_supernode"),
)

IDLE_SLEEP = 3.0  # flwr 1.42's idle poll of the SuperLink
REPLY_SLEEP = 0.5  # flwr 1.42's poll for the ClientApp's reply


# ----------------------------------------------------------------------------- fast SuperNode


def _patched_time(poll: float) -> types.ModuleType:
    """A copy of :mod:`time` whose ``sleep`` turns 3 s into ``poll`` and 0.5 s into a tenth."""
    fast = types.ModuleType("time")
    fast.__dict__.update(time.__dict__)
    shorter = {IDLE_SLEEP: poll, REPLY_SLEEP: poll / 10}

    def sleep(seconds: float) -> None:
        time.sleep(shorter.get(seconds, seconds))

    fast.sleep = sleep
    return fast


def install_fast_polls(poll: float) -> None:
    """Give ``flwr.supernode.start_client_internal`` a ``time`` with the shorter sleeps."""
    from flwr.supernode import start_client_internal

    start_client_internal.time = _patched_time(poll)


def run_fast_supernode(poll: float) -> int:
    """``flower-supernode`` (arguments from ``sys.argv``) with its polls shortened to ``poll``."""
    from flwr.supernode.cli import flower_supernode

    install_fast_polls(poll)
    sys.argv[0] = "flower-supernode"
    return flower_supernode()


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


def _run_clientapp_task(
    token: str,
    runtime_api_address: str,
    insecure: bool,
    certificates: bytes | None,
    apps: dict[str, Any],
) -> None:
    """One task, as ``flwr.supernode.runtime.run_clientapp.run_clientapp`` minus the exit."""
    import traceback

    from flwr.app import Error, Message
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

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
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        message, context, run, fab = pull_task_input(client)
        if fab.hash_str not in apps:
            install_from_fab(fab.content, skip_prompt=True)  # no-op when already unpacked
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            apps[fab.hash_str] = load(run.fab_id, run.fab_version, fab.hash_str)
        reply = apps[fab.hash_str](message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - reported to the ServerApp as an error reply
        traceback.print_exc()
        details = f"{type(ex)}:<'{ex}'>"
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        if isinstance(ex, LoadClientAppError):
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
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
