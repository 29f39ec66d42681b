"""``ratls doctor``: diagnose the confidential VM, Triton and the gateway config before (or
instead of guessing why) ``ratls serve`` refuses to start.

Each check is a small function returning :class:`Finding`s; everything that touches the
machine goes through :class:`Host`, so tests drive the checks against a fake device tree
(``Host.root``), fake sockets and a fixed clock. A failed check is a diagnosis, not a
security verdict: the command exits 2, never 1 (which the ``ratls`` CLI keeps for verdicts).
"""

from __future__ import annotations

import argparse
import json
import sys

from ratls.errors import ConfigError, UsageError

from ..config import load_config
from ..ports import bind_error
from .clock import (
    RELEASE_NOT_BEFORE,
    SKEW_FAIL,
    SKEW_WARN,
    VendorRoots,
    check_skew,
    check_vendor_roots,
    clock_bounds,
    load_vendor_roots,
    measure_skew,
)
from .findings import Finding, Status, exit_code, fail, render_text
from .host import Host, Identity, default_host
from .repository import writable_by
from .runner import run_checks
from .triton import socket_owner

__all__ = [
    "RELEASE_NOT_BEFORE",
    "Finding",
    "Host",
    "Identity",
    "Status",
    "VendorRoots",
    "add_doctor_arguments",
    "bind_error",
    "check_skew",
    "check_vendor_roots",
    "clock_bounds",
    "cmd_doctor",
    "default_host",
    "exit_code",
    "load_vendor_roots",
    "measure_skew",
    "render_text",
    "run_checks",
    "socket_owner",
    "writable_by",
]


# ---- runner and command ----

# The command lives here, not in a submodule: cmd_doctor looks default_host up in this module, so
# patching gateway.doctor.default_host (as the tests do) reaches it.

def add_doctor_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``ratls.commands`` entry point: ``ratls doctor``."""
    parser = commands.add_parser("doctor", help="diagnose the CVM, Triton and the gateway config before 'ratls "
                                                "serve' (exit 2 when a check fails; needs the server extra)")
    add_doctor_arguments(parser)
    parser.set_defaults(func=cmd_doctor)


def add_doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Check the confidential VM, Triton, the model repository, ports, clock and bundled vendor roots "
                     "against the gateway config, before 'ratls serve'.")
    p.epilog = ("exit status: 0 when no check failed (warnings allowed), 2 when a check failed or the config does "
                "not load. A failed check is a diagnosis, not a security verdict, so exit 1 is never used.")
    p.add_argument("-c", "--config", metavar="FILE", help="gateway YAML (default: the embedded config/gateway.yaml)")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    p.add_argument("--time-url", metavar="URL",
                   help="also compare the clock with the Date header of this HTTPS server "
                        f"(warn above {SKEW_WARN.seconds} s, fail above {SKEW_FAIL.seconds // 60} min)")


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.time_url and not args.time_url.startswith("https://"):
        raise UsageError(f"--time-url '{args.time_url}' is not an https:// URL",
                         hint="a plain-HTTP Date header can be forged by anyone on the path")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        findings = [fail("config", exc.message, exc.hint)]
    else:
        findings = run_checks(cfg, default_host(), time_url=args.time_url)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        print(render_text(findings))
    sys.stdout.flush()
    return exit_code(findings)
