"""Child processes that die with their parent (Linux PR_SET_PDEATHSIG), so a gateway killed
with SIGKILL does not leave Envoy or Triton running unsupervised.

The signal is set by util-linux's ``setpriv --pdeathsig`` in front of the command rather than
by a Python ``preexec_fn``: running Python between fork and exec in a process with live gRPC
threads (the gateway's xDS server) can abort the child.
"""

from __future__ import annotations

import shutil
import sys


def with_parent_death_signal(cmd: list[str], signal_name: str = "TERM") -> list[str]:
    """Prefix *cmd* so the child gets SIGTERM when its parent thread exits (Linux only;
    returned unchanged where setpriv is unavailable)."""
    if not sys.platform.startswith("linux"):
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return cmd
    return [setpriv, f"--pdeathsig={signal_name}", "--", *cmd]
