"""A sweep's worker process: cells one after another on one loaded base model.

A worker (:data:`COMMAND`: :func:`main` given the ``fedmllm`` command,
:func:`fedmllm.cli.main`, which the bench layer does not import) reads one JSON request a line
on its standard input, ``{"cell": ID, "args": ["run", "--config", FILE], "log": LOG,
"threads": N}``, and runs the cell as ``fedmllm run`` would (the command with those arguments;
its console, and every byte the process writes on fds 1 and 2 meanwhile, appended to
``LOG``). It answers one line on its original standard output, ``{"cell": ID,
"rc": EXIT_STATUS, "loads": N}`` (``N``: the bases it has loaded so far, this cell's
included). End of input ends it. Nothing but JSON crosses the pipe.

What the cells of one worker share is only the frozen base model (:class:`Bases`): it stays
loaded while the next cell needs the same one (source, device, dtype, quantization, remote
code) and is otherwise loaded again; each cell wraps it with its own LoRA, and after the cell
peft's ``unload()`` takes the LoRA layers out again (the base weights were frozen, so they are
exactly as loaded), and the modules' train/eval modes and ``requires_grad`` are put back. A
cell that changes the base itself (PiSSA's residual, ``modules_to_save`` copies) or that did
not end cleanly drops it: the next cell loads it afresh. What a process starts with is put back
before every cell (:class:`Globals`): torch's, NumPy's and Python's random states, the
deterministic-algorithm and TF32 flags, the default dtype, gradient mode and the cell's thread
count. A cell therefore gives bit for bit what ``fedmllm run`` gives in a process of its own
(tested).

:class:`Worker` is the sweep's side of one worker (:mod:`fedmllm.bench.runner`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Bases", "Globals", "Worker", "main"]

#: How the sweep starts a worker (``python -c COMMAND``): the command line on top of the
#: layers hands its ``fedmllm`` command to :func:`main`.
COMMAND = ("import sys; from fedmllm.cli import main as fedmllm; "
           "from fedmllm.bench.worker import main; sys.exit(main(fedmllm))")


# ------------------------------------------------------------------------ the worker's side

class Bases:
    """The worker's loaded base (the last one a cell used), for
    :data:`fedmllm.engine.bundle.BASES`."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.base = None
        self.loads = 0
        """How many times a base was loaded (a test's and a benchmark's count)."""
        self._wrapped = None
        self._plan = None
        self._modes: dict[str, bool] = {}
        self._grads: dict[str, bool] = {}

    def load(self, m):
        """The base of the model plan ``m``: the loaded one when ``m`` names the same, else
        loaded now (:func:`~fedmllm.model.loading.load_base`)."""
        from ..model.loading import load_base

        key = (str(m.source), str(m.device), str(m.dtype), m.trust_remote_code, m.quantization)
        if self.base is None or key != self.key:
            self.drop()
            self.base = load_base(m.source, device=m.device, dtype=m.dtype,
                                  trust_remote_code=m.trust_remote_code,
                                  quantization=m.quantization)
            self.key, self.loads = key, self.loads + 1
            model = self.base.model
            self._modes = {n: mod.training for n, mod in model.named_modules()}
            self._grads = {n: p.requires_grad for n, p in model.named_parameters()}
        return self.base

    def adopt(self, peft_model, plan) -> None:
        """The peft model a cell made of the base (given back by :meth:`release`)."""
        self._wrapped, self._plan = peft_model, plan

    def release(self, clean: bool) -> None:
        """After a cell: the base as it was loaded again (LoRA unloaded, modes and
        ``requires_grad`` put back, activation checkpointing off), or dropped when the cell
        changed the base itself or did not end ``clean``."""
        wrapped, plan, self._wrapped, self._plan = self._wrapped, self._plan, None, None
        if wrapped is None:
            return
        if not clean or plan.init == "pissa" or plan.model.modules_to_save:
            self.drop()
            return
        model = wrapped.unload()  # peft: the LoRA layers out, the base layers back, unmerged
        if model is not self.base.model:
            self.drop()
            return
        if plan.model.gradient_checkpointing:
            disable = getattr(model, "activation_checkpointing_disable", None) \
                or model.gradient_checkpointing_disable
            disable()
        for name, module in model.named_modules():
            module.training = self._modes[name]
        for name, p in model.named_parameters():
            p.requires_grad_(self._grads[name])

    def drop(self) -> None:
        """Forget the loaded base (its memory is freed)."""
        self.base = self.key = self._wrapped = self._plan = None
        gc.collect()
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


@dataclass
class Globals:
    """The process-wide state a run could leave behind, as a fresh process has it."""

    torch_rng: object
    numpy_rng: object
    python_rng: object
    seed: int
    deterministic: bool
    warn_only: bool
    cudnn: tuple
    matmul_precision: str
    default_dtype: object

    @classmethod
    def capture(cls) -> Globals:
        """Now (the worker calls it before its first cell)."""
        import numpy as np
        import torch

        b = torch.backends
        return cls(torch.get_rng_state(), np.random.get_state(), random.getstate(),
                   torch.initial_seed(), torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled(),
                   (b.cudnn.deterministic, b.cudnn.benchmark, b.cudnn.allow_tf32,
                    b.cuda.matmul.allow_tf32), torch.get_float32_matmul_precision(),
                   torch.get_default_dtype())

    def restore(self, threads: int) -> None:
        """Put it all back, and run on ``threads`` intra-op threads (what ``OMP_NUM_THREADS``
        gives a cell's process). CUDA's generators, where CUDA started, are seeded as a fresh
        process's are (:func:`torch.initial_seed`)."""
        import numpy as np
        import torch

        torch.set_rng_state(self.torch_rng)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(self.seed)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        b = torch.backends
        (b.cudnn.deterministic, b.cudnn.benchmark, b.cudnn.allow_tf32,
         b.cuda.matmul.allow_tf32) = self.cudnn
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.set_default_dtype(self.default_dtype)
        torch.set_grad_enabled(True)
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _output_to(log: Path):
    """Everything written on fds 1 and 2 (Python's streams, C libraries) appended to ``log``
    meanwhile."""
    with open(log, "ab") as f:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_cell(fedmllm: Callable[[list[str]], int], args: list[str], log: Path, threads: int,
             bases: Bases, fresh: Globals) -> int:
    """One cell, ``fedmllm(ARGS)`` (the ``fedmllm`` command's main) on ``bases``; its exit
    status as its process's would be (an exception that escapes the command: its traceback in
    the log, status 1)."""
    from ..engine.bundle import BASES

    rc = 1
    with _output_to(log):
        fresh.restore(threads)
        token = BASES.set(bases)
        try:
            rc = fedmllm(list(args))
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 (as an uncaught one ends a process: traceback, 1)
            traceback.print_exc()
        finally:
            BASES.reset(token)
            bases.release(clean=rc == 0)
            gc.collect()
    return rc


def main(fedmllm: Callable[[list[str]], int]) -> int:
    """The worker's loop (see the module docstring), running cells with ``fedmllm``. Ctrl-C
    (SIGINT) stops the running cell as it stops a run (it checkpoints; status 130); between
    cells, it ends the worker."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    with open(os.devnull, "wb") as null:  # nothing but answers on the pipe
        os.dup2(null.fileno(), 1)
    fresh, bases = Globals.capture(), Bases()
    try:
        for line in sys.stdin:
            request = json.loads(line)
            rc = run_cell(fedmllm, request["args"], Path(request["log"]),
                          int(request["threads"]), bases, fresh)
            answers.write(json.dumps({"cell": request["cell"], "rc": rc,
                                      "loads": bases.loads}) + "\n")
    except KeyboardInterrupt:
        return 130
    return 0


# ------------------------------------------------------------------------- the sweep's side

class Worker:
    """A worker process as the sweep sees it: cells go in one at a time
    (:meth:`start`, then :meth:`wait` from the same thread)."""

    def __init__(self, env: dict, errors: Path):
        with open(errors, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", COMMAND], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, env=env, text=True,
                start_new_session=True)  # the sweep alone takes a terminal's Ctrl-C
        self.returncode: int | None = None
        self.loads = 0
        """The bases the worker had loaded when its last cell ended."""
        self.ended = threading.Event()
        self.dead = False

    def start(self, cell: str, args: list[str], log: Path, threads: int) -> bool:
        """Send a cell; ``False`` when the worker is gone (start another)."""
        self.returncode = None
        self.ended.clear()
        request = {"cell": cell, "args": args, "log": str(log), "threads": threads}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.dead = True
            return False
        return True

    def wait(self) -> int:
        """The cell's exit status; a worker that died meanwhile gives its own (negative: the
        signal that killed it), and is :attr:`dead`."""
        line = self.proc.stdout.readline()
        if line:
            answer = json.loads(line)
            self.returncode, self.loads = int(answer["rc"]), int(answer["loads"])
        else:
            self.dead = True
            self.returncode = self.proc.wait()
        self.ended.set()
        return self.returncode

    def join(self, timeout: float) -> bool:
        """Whether the running cell ended within ``timeout`` seconds (another thread waits)."""
        return self.ended.wait(timeout)

    def interrupt(self) -> None:
        """Ctrl-C for the running cell: it checkpoints and stops."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self, timeout: float = 30) -> None:
        """End the worker (end of input), killed after ``timeout`` seconds."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdout.close()
