"""Child processes that die with their parent (Linux PR_SET_PDEATHSIG), so a gateway killed
with SIGKILL does not leave Envoy or Triton running unsupervised."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
