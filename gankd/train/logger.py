"""Run logging: a JSONL log (one line per logged step), a tqdm progress bar, TensorBoard when asked."""

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm


class RunLogger:
    """Writes only when `enabled` (rank 0); the other processes get a silent logger."""

    def __init__(self, run_dir: Path, *, enabled: bool, total: int, start: int, tensorboard: bool = False):
        self.enabled = enabled
        self.started = time.time()
        self.file = None
        if enabled:
            path = run_dir / "log.jsonl"
            if start > 0 and path.exists():
                # A resumed run logs again the steps after its checkpoint: drop the earlier copies of those.
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= start]
                path.write_text("".join(line + "\n" for line in kept))
            # A fresh run starts a fresh log, also over one an aborted run left behind.
            self.file = path.open("a" if start > 0 else "w")
        # A terminal gets a progress bar; a file or pipe (a job's log) a plain line per logged step instead of
        # thousands of redrawn bars.
        self.lines = enabled and not sys.stderr.isatty()
        self.name, self.total = run_dir.name, total
        self.bar = tqdm(total=total, initial=start, disable=not enabled or self.lines, desc=run_dir.name,
                        dynamic_ncols=True)  # fmt: skip
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError("config.tensorboard is true but the tensorboard package is missing") from error
            self.writer = SummaryWriter(run_dir / "tensorboard")

    def progress(self, scalars: dict) -> None:
        if self.enabled:
            self.bar.update(1)
            self.bar.set_postfix({name: f"{value:.3g}" for name, value in scalars.items() if name != "lr"})

    def log(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "seconds": round(time.time() - self.started, 3)} | scalars
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.lines:
            values = " ".join(f"{name}={value:.4g}" for name, value in scalars.items() if name != "lr")
            print(f"{self.name}: step {step}/{self.total} ({record['seconds']:.0f} s) {values}", file=sys.stderr,
                  flush=True)  # fmt: skip
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
