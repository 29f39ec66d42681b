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


def cmd_sim_gpu(args: argparse.Namespace) -> int:
    """The simulated NVIDIA GPU: its roots to pin, its versions, and (``--rims-out``) its RIMs
    by RIM ID, for verifying a certificate offline (``ratls verify --rim-dir``)."""
    from ..nvidia.sim import DRIVER_VERSION, VBIOS_VERSION, sim_gpu_dir
    from ..nvidia.sim import load_or_create as load_gpu
    directory = sim_gpu_dir(Path(args.sim_dir) if args.sim_dir else None)
    gpu = load_gpu(directory)
    rims = gpu.rims_by_id()
    if args.rims_out:
        out = Path(args.rims_out)
        out.mkdir(parents=True, exist_ok=True)
        for rim_id, xml in rims.items():
            (out / f"{rim_id}.xml").write_bytes(xml)
    print(json.dumps({"state_dir": str(directory), "root_sha256": gpu.root_sha256,
                      "rim_root_sha256": gpu.rim_root_sha256, "driver": DRIVER_VERSION, "vbios": VBIOS_VERSION,
                      "rims": sorted(rims)}, indent=2))
    return 0


def add_sim_commands(commands: Any) -> None:
    parser = commands.add_parser("sim", help="the simulated platform")
    sim = parser.add_subparsers(dest="sub", required=True, parser_class=type(parser))
    sr = sim.add_parser("root", help="print the simulated root fingerprint to pin in a policy")
    sr.add_argument("--sim-dir", metavar="DIR")
    sr.add_argument("--platform", default="sim", choices=["sim", "sim-tdx"],
                    help="which simulated chain: SNP-format (sim, default) or TDX (sim-tdx)")
    sr.set_defaults(func=cmd_sim_root)
    sg = sim.add_parser("gpu", help="the simulated NVIDIA GPU: roots to pin, versions, RIMs")
    sg.add_argument("--sim-dir", metavar="DIR")
    sg.add_argument("--rims-out", metavar="DIR", help="write its RIMs here as <RIM-ID>.xml (for --rim-dir)")
    sg.set_defaults(func=cmd_sim_gpu)
