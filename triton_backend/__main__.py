"""Operator tools: ``python -m triton_backend manifest DIR`` prints the model manifest and the
digests to pin in a client policy; ``python -m triton_backend check URL PORT...`` runs the
hardening check against a Triton this project did not start; ``python -m triton_backend
block-bytecode DIR`` keeps Triton's python backend from writing bytecode into a repository."""

from __future__ import annotations

import argparse
import json
import sys

from . import hardening
from .manifest import ManifestError, block_bytecode, build_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m triton_backend")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifest", help="measure a model repository")
    m.add_argument("repository")
    m.add_argument("--full", action="store_true", help="print every file, not only the digests")
    c = sub.add_parser("check", help="hardening check of a running Triton")
    c.add_argument("http_url", help="e.g. http://127.0.0.1:8000")
    c.add_argument("ports", nargs="*", type=int, help="Triton's HTTP/gRPC/metrics ports to inspect")
    b = sub.add_parser("block-bytecode", help="lay empty __pycache__ files so Triton writes no bytecode there")
    b.add_argument("repository")
    args = parser.parse_args(argv)
    if args.command == "check":
        report = hardening.check(args.http_url, args.ports)
        print(json.dumps(report.to_json(), indent=2))
        return 0 if report.ok else 1
    try:
        if args.command == "block-bytecode":
            laid = block_bytecode(args.repository)
            print(f"laid {len(laid)} __pycache__ blockers in {args.repository} (the manifest is unchanged)")
        else:
            manifest = build_manifest(args.repository)
            print(json.dumps(manifest.to_json() if args.full else manifest.claims(), indent=2))
    except ManifestError as exc:
        print(f"triton_backend: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
