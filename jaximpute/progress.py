"""Progress of long runs: a bar on a terminal, plain lines elsewhere (logs, CI, notebooks).

The device program calls `Progress.__call__` through a host callback that carries only the sweep
index (docs/design/architecture.md, "Host/device crossing": the host stays out of the loop
otherwise).
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(self, total: int, label: str = "sampling", stream=None, enabled: bool = True,
                 unit: str = "sweep"):
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start: float | None = None   # set at the first sweep, so compile time is not counted
        self.last_pct = -1
        self.lock = threading.Lock()

    @property
    def every(self) -> int:
        """Sweeps between callbacks: about 100 updates on a terminal, 10 otherwise."""
        return max(1, self.total // (100 if self.tty else 10))

    def __call__(self, t) -> None:
        if not self.enabled:
            return
        # programs running side by side (jaximpute.execution.parallel_split) each report their sweeps:
        # show the furthest, once per percent
        with self.lock:
            done = int(t) + 1
            if self.start is None:
                self.start = time.perf_counter()
            pct = int(100 * done / self.total)
            if pct <= self.last_pct:
                return
            self.last_pct = pct
            self._show(done, pct)

    def _show(self, done: int, pct: int) -> None:
        assert self.start is not None
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done)
        if self.tty:
            bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
            self.stream.write(f"\r  {self.label} [{bar}] {pct:3d}%  {self.unit} {done}/{self.total}"
                              f"  ~{eta:.0f}s left ")
        else:
            self.stream.write(f"  {self.label}: {self.unit} {done}/{self.total} ({pct}%), "
                              f"{elapsed:.1f}s elapsed\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
