"""Checkpoint and stop cleanly when the scheduler says the job is about to end (pre-emption, time limit).

    preemption = CheckpointOnSignal()          # SIGUSR1 and SIGTERM
    trainer = GRPOTrainer(..., callbacks=[..., preemption])
    trainer.train(resume_from_checkpoint=...)
    preemption.exit_if_triggered(trainer.accelerator)   # exits 75 if training stopped for a signal

A signal only sets a flag: the handler never touches the model. At the end of the optimizer step in progress
the callback asks the trainer to save a checkpoint (`control.should_save`) and to stop
(`control.should_training_stop`); the trainer then writes `checkpoint-N` as it does for `save_steps` (model,
optimizer, scheduler, RNG states, `trainer_state.json`, and whatever other callbacks add in `on_save`, such as
the over-optimization monitor's `overopt_state.json`). The run resumes from it with
`--resume_from_checkpoint true` (the last checkpoint in `output_dir`).

With several processes, the ranks agree at every step end (one all-reduce of a single number) on whether any of
them was signalled, so they all save the same step and stop together even when the signal reached only some of
them. Handlers are installed in `on_train_begin` (or earlier, with `install()`, so a signal that comes while the
model loads is kept and acted on after the first step) and the previous ones are restored in `on_train_end`.
Signals can only be handled in the main thread; elsewhere the callback logs a warning and does nothing.

Exit: `exit_if_triggered` waits until every rank is past the checkpoint, then the main process exits with
`PREEMPTED_EXIT_CODE` (75, `EX_TEMPFAIL` in sysexits.h: "temporary failure; the user is invited to retry") and
the other ranks with 0. A single process thus exits 75; under `torchrun` (`accelerate launch` with several
processes) the launcher reports the main process's non-zero exit as its own exit code 1, and since only the main
process "fails", the launcher never kills it before its own exit handlers (W&B's, for one) have run.

Launchers: Slurm's `--signal=B:USR1@300` signals the batch shell, whose trap forwards the signal to the training
processes (see `slurm/`). `torchrun` dies on a SIGUSR1 it receives itself, so the Slurm scripts start the launcher
with SIGUSR1 ignored; the workers inherit that, and this callback installs its own handler over it. The scripts
requeue the job when they forwarded a SIGUSR1 and training then exited non-zero.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75
DEFAULT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class CheckpointOnSignal(TrainerCallback):
    """On any of `signals`: save a checkpoint at the end of the current optimizer step, then stop training.

    After training, `triggered` says whether it did so, `stopped_at_step` at which step, and `received` which
    signal this process got first (None on a rank that was not signalled itself but stopped with the others).
    """

    def __init__(self, signals: Iterable[int | signal.Signals] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signal.Signals(s) for s in signals)
        if not self.signals:
            raise ValueError("CheckpointOnSignal needs at least one signal")
        self.received: signal.Signals | None = None
        self.triggered = False
        self.stopped_at_step: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    # ----- handlers -------------------------------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> bool:
        """Install the handlers now (idempotent). False when not in the main thread, where Python cannot."""
        if self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            logger.warning(
                "CheckpointOnSignal: not in the main thread, so %s cannot be handled; no checkpoint on pre-emption",
                ", ".join(s.name for s in self.signals),
            )
            return False
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return True

    def uninstall(self) -> None:
        """Put back the handlers that were there before `install()`."""
        for sig, previous in self._previous.items():
            # getsignal() gives None for a handler not set from Python; the default action is the safe fallback
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the main thread may be anywhere (inside a CUDA call, a collective, a file write).
        if self.received is None:
            self.received = signal.Signals(signum)

    # ----- trainer events -------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self.install()

    def on_step_end(self, args, state, control, **kwargs):
        if self.triggered or not self._any_rank_signalled(args):
            return
        self.triggered = True
        self.stopped_at_step = state.global_step
        control.should_save = True
        control.should_training_stop = True
        if state.is_world_process_zero:
            what = f"{self.received.name} received" if self.received is not None else "another rank was signalled"
            logger.warning(
                "%s: saving checkpoint-%d in %s and stopping; resume with --resume_from_checkpoint true",
                what, state.global_step, args.output_dir,
            )
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.uninstall()

    def exit_if_triggered(self, accelerator, before_exit: Callable[[], None] | None = None) -> None:
        """After `trainer.train()`: if training stopped for a signal, exit once every rank is past the checkpoint,
        the main process with `PREEMPTED_EXIT_CODE` and the others with 0. Returns if it did not stop for one.
        `before_exit` runs on every rank after that barrier, before the process group ends."""
        if not self.triggered:
            return
        accelerator.wait_for_everyone()
        is_main = accelerator.is_main_process
        if before_exit is not None:
            before_exit()
        accelerator.end_training()  # a process group left to the interpreter's exit can abort it (SIGABRT), and
        sys.exit(PREEMPTED_EXIT_CODE if is_main else 0)  # the scheduler would see that instead of this code

    def _any_rank_signalled(self, args) -> bool:
        flag = self.received is not None
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return flag
        if torch.distributed.get_world_size() == 1:
            return flag
        # every rank calls on_step_end once per optimizer step, so this collective is matched on all ranks
        tensor = torch.tensor([int(flag)], dtype=torch.int32, device=args.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())
