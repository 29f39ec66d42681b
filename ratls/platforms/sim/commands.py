"""``ratls sim``: the simulator's own subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .chain import default_state_dir, load_or_create
from .tdx_chain import load_or_create_tdx, tdx_state_dir


def cmd_sim_root(args: argparse.Namespace) -> int:
    state = Path(args.sim_dir) if args.sim_dir else default_state_dir()
    if args.platform == "sim-tdx":
        tdx = load_or_create_tdx(tdx_state_dir(state))
        print(json.dumps({"state_dir": str(tdx_state_dir(state)), "root_sha256": tdx.root_sha256,
                          "mrtd": tdx.mrtd.hex()}, indent=2))
        return 0
    chain = load_or_create(state)
    print(json.dumps({"state_dir": str(state), "root_sha256": chain.root_sha256,
                      "measurement": chain.measurement.hex()}, indent=2))
    return 0


def add_sim_commands(commands: Any) -> None:
    parser = commands.add_parser("sim", help="the simulated platform")
    sim = parser.add_subparsers(dest="sub", required=True, parser_class=type(parser))
    sr = sim.add_parser("root", help="print the simulated root fingerprint to pin in a policy")
    sr.add_argument("--sim-dir", metavar="DIR")
    sr.add_argument("--platform", default="sim", choices=["sim", "sim-tdx"],
                    help="which simulated chain: SNP-format (sim, default) or TDX (sim-tdx)")
    sr.set_defaults(func=cmd_sim_root)
