"""``ratls serve``: run the gateway in the foreground until SIGTERM/SIGINT; SIGHUP rotates."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ratls.errors import RatlsError

from . import logs
from .app import Gateway
from .config import load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="gateway YAML (default: the embedded config/gateway.yaml)")
    p.add_argument("--platform", help="override identity.platform (auto, sev-snp, sim)")
    p.add_argument("--port", type=int, help="override listen.port")
    p.add_argument("--log-level", default=os.environ.get("RATLS_LOG_LEVEL", "info"))


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
        return 2
    return 0
