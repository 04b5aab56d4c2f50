"""Interrupts (Ctrl-C, SIGTERM from a job scheduler) deferred to the next step boundary.

While a run trains, the first SIGINT or SIGTERM only records the request; the loop finishes the step in
flight (its data loading included), saves every completed step and stops. A second SIGINT stops at once
(KeyboardInterrupt), keeping what was saved. DataLoader workers ignore SIGINT (`ignore_in_worker`), so a
terminal's Ctrl-C, which reaches the whole process group, does not kill them under the step in flight; SIGTERM
is meant for the training process (as torchrun and job schedulers send it), and the loader stops its workers.
"""

import contextlib
import signal
import threading


class DeferredInterrupts:
    """Records SIGINT/SIGTERM while installed (`requested`: the first signal's name, or None)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: str | None = None

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the step
        self.requested = self.requested or signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self):
        """Handle the signals in this block (only the main thread can; elsewhere they stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        # A signal the process was started to ignore (a background job's SIGINT) stays ignored.
        ignored = {signum for signum in self.SIGNALS if signal.getsignal(signum) is signal.SIG_IGN}
        previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS if signum not in ignored}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave SIGINT to the main process, which stops at a step boundary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
