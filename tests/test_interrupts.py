"""Interrupts reach the next step boundary and every completed step is saved (the real `gankd` process)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gankd.train import load_checkpoint
from gankd.train.interrupts import DeferredInterrupts


def _train_until_logged(tmp_path, *extra: str) -> subprocess.Popen:
    """`gankd train` of a long classifier run with a DataLoader worker, in its own process group (as a
    terminal's job), returned once it has logged a few steps."""
    arguments = [sys.executable, "-m", "gankd.cli", "train", "digits_cnn_teacher", "--set", f"output_dir={tmp_path}",
                 "--set", "steps=100000", "--set", "checkpoint_every=100000", "--set", "log_every=5",
                 "--set", "model.options.width=4", "--set", "data.batch_size=16", "--set", "data.num_workers=1",
                 *extra]  # fmt: skip
    # SIGINT as a terminal's job has it, also when the tests themselves run as a background job (ignoring it).
    process = subprocess.Popen(arguments, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 240
    for line in process.stderr:
        if "step 10/" in line or time.monotonic() > deadline:
            return process
    raise AssertionError(f"the run ended before it logged step 10: exit status {process.wait()}")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_saves_every_completed_step(tmp_path, signum):
    process = _train_until_logged(tmp_path)
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)  # Ctrl-C reaches the whole process group, DataLoader workers included
    else:
        os.kill(process.pid, signum)  # a scheduler's or torchrun's SIGTERM goes to the training process
    error = process.stderr.read().strip().splitlines()[-1]
    assert process.wait(timeout=120) == 2, error
    saved = load_checkpoint(tmp_path / "digits_cnn_teacher")["step"]
    assert saved >= 10
    assert error == (f"gankd train: error: interrupted ({signal.Signals(signum).name}) after step {saved}; "
                     f"{tmp_path / 'digits_cnn_teacher' / 'checkpoints' / 'last.pt'} holds step {saved}: continue "
                     "with --resume")  # fmt: skip


def test_a_second_ctrl_c_stops_at_once():
    original = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started us
    try:
        interrupts = DeferredInterrupts()
        with interrupts.installed():
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupts.requested == "SIGINT"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs between bytecodes; it has long run by then
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        # A process started with SIGINT ignored (a background job) keeps ignoring it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with DeferredInterrupts().installed():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, original)
