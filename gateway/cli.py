"""``ratls serve``: run the gateway in the foreground until SIGTERM/SIGINT; SIGHUP rotates."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from ratls import registry
from ratls.errors import RatlsError, UpstreamUnavailable

from . import logs
from .app import Gateway
from .config import load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="gateway YAML (default: the embedded config/gateway.yaml)")
    p.add_argument("--platform", help=f"override identity.platform (auto, {registry.choices_text()})")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--log-level", default=os.environ.get("RATLS_LOG_LEVEL", "info"))
    p.add_argument("--hold-on-refusal", action="store_true",
                   help="after refusing to start (no TEE, bad configuration), stay idle until stopped instead "
                        "of exiting: a container restart policy would otherwise retry the refusal forever")


def add_serve_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``ratls.commands`` entry point: ``ratls serve``."""
    parser = commands.add_parser("serve", help="run the attested gateway (needs the server extra)")
    add_arguments(parser)
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    env = dict(os.environ)
    if args.platform:
        env["RATLS_GATEWAY__IDENTITY__PLATFORM"] = args.platform
    if args.port:
        env["RATLS_GATEWAY__LISTEN__PORT"] = str(args.port)
    try:
        config = load_config(args.config, env)
        gateway = Gateway(config)
        asyncio.run(gateway.run_forever())
    except RatlsError as exc:
        print(f"ratls serve: {exc}", file=sys.stderr)
        if args.hold_on_refusal and not isinstance(exc, UpstreamUnavailable):
            hold_until_stopped()
        return 2
    return 0


def hold_until_stopped() -> None:
    """Idle (unhealthy: nothing listens) until SIGTERM or SIGINT. A refusal needs the operator;
    a restart would only repeat it. sigwait also works as a container's PID 1, where signals
    without a handler are ignored."""
    print("ratls serve: refused; holding until stopped (--hold-on-refusal)", file=sys.stderr, flush=True)
    wanted = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    signal.sigwait(wanted)
