"""The ``ratls`` command line. Exit codes: 0 success, 1 a security verdict failed,
2 bad usage, unreadable input or an unreachable server (the message says what and how to fix it)."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import __version__, registry
from .appraisal import Appraisal
from .cert import FILE_HINT, UnreadableCertificate, generate_key, parse_ratls, read_certificate
from .claims import Claims
from .errors import EvidenceError, RatlsError, UnreadableEvidence, UsageError
from .evidence import Evidence
from .pipeline import verify_certificate, verify_evidence
from .platforms.snp.abi import Endorsement
from .policy import Policy, load_policy
from .timeutil import parse_duration, parse_time, utcnow
from .trust import Trust

EXIT_OK, EXIT_VERDICT, EXIT_USAGE = 0, 1, 2
COMMANDS_GROUP = "ratls.commands"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep our own wording
        self.print_usage(sys.stderr)
        print(f"ratls: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} '{path}': {exc.strerror}", hint="check the path") from None


def _now(args: argparse.Namespace) -> datetime:
    return parse_time(args.at) if getattr(args, "at", None) else utcnow()


def _clock(args: argparse.Namespace) -> Callable[[], datetime]:
    # For long-running commands: --at pins every check to that instant, as it does for one-shot ones.
    if getattr(args, "at", None):
        at = parse_time(args.at)
        return lambda: at
    return utcnow


def _sim_state_dir(args: argparse.Namespace) -> Path:
    from .platforms.sim.chain import default_state_dir
    return Path(args.sim_dir) if getattr(args, "sim_dir", None) else default_state_dir()


def _policy(args: argparse.Namespace) -> Policy | None:
    return load_policy(args.policy) if getattr(args, "policy", None) else None


def _trust(args: argparse.Namespace) -> Trust:
    crls = [_read(p, "CRL") for p in (getattr(args, "crl", None) or [])]
    trust = Trust(crls=crls, require_crl=getattr(args, "require_crl", False),
                  kds_offline=not getattr(args, "online", False),
                  kds_cache_dir=Path(args.kds_cache) if getattr(args, "kds_cache", None) else None)
    if getattr(args, "pccs_url", None):
        trust.pccs_url = args.pccs_url
    if getattr(args, "rim_dir", None):
        trust.nvidia_rim_dir = Path(args.rim_dir)
    return trust


def _emit(appraisal: Appraisal, as_json: bool, extra: dict[str, object] | None = None) -> int:
    if as_json:
        doc = appraisal.to_json()
        if extra:
            doc.update(extra)
        print(json.dumps(doc, indent=2))
    else:
        print(appraisal.summary())
    return EXIT_OK if appraisal.ok else EXIT_VERDICT


# ---- commands ----

def cmd_evidence_verify(args: argparse.Namespace) -> int:
    device = registry.lookup_device(args.platform)
    if device is not None:
        from .device_cli import verify_device_evidence
        from .pipeline import trust_for
        policy = _policy(args)
        return _emit(verify_device_evidence(device, args, policy=policy, trust=trust_for(policy, _trust(args)),
                                            now=_now(args), read=_read), args.json)
    kind = registry.lookup(args.platform)
    report = _read(args.report, "report")
    endorsements: dict[str, bytes] = {}
    if args.vcek:
        data = _read(args.vcek, "VCEK/VLEK certificate")
        endorsements[Endorsement.VCEK] = data  # VCEK or VLEK: the certificate itself says which
    if args.chain:
        endorsements[Endorsement.CHAIN] = _read(args.chain, "certificate chain")
    if args.sim_dir:
        settings = registry.PlatformSettings(sim_state_dir=Path(args.sim_dir))
        endorsements = {**kind.local_endorsements(settings), **endorsements}
    trust = _trust(args)
    if args.collateral:
        trust.tdx_collateral = _read(args.collateral, "TDX collateral (QuoteCollateralV3 JSON)")
    evidence = Evidence(kind.name, kind.media_type, report, endorsements)
    expected = bytes.fromhex(args.report_data) if args.report_data else None
    appraisal = verify_evidence(evidence, policy=_policy(args), now=_now(args), trust=trust,
                                expected_report_data=expected)
    return _emit(appraisal, args.json)


def _is_server(target: str) -> bool:
    return target.startswith("https://") or (":" in target and not Path(target).exists())


def _load_cert_arg(target: str, timeout: float = 10.0) -> bytes | x509.Certificate:
    """The certificate FILE, https://HOST:PORT or HOST:PORT names.

    A file is parsed here: one that is not a certificate is bad input (UnreadableCertificate,
    exit 2), never a verdict. A server's certificate comes back as the DER it presented, for the
    pipeline to judge. A server that sends garbage cannot reach that point unless OpenSSL accepted
    its Certificate message: if the handshake fails, fetch_certificate raises EvidenceError (exit
    2, unreachable): no certificate was presented, so there is nothing to give a verdict on and
    nothing was trusted. If the handshake succeeds with bytes we cannot parse, that is what the
    server offers as its identity: a failed certificate.parse check, a verdict (exit 1), so that it
    never passes for a transient network problem."""
    if _is_server(target):
        from .client.fetch import fetch_certificate, parse_target
        return fetch_certificate(parse_target(target), timeout=timeout)
    return read_certificate(_read(target, "certificate"), source=f"'{target}'", hint=FILE_HINT)


def _x509_arg(target: str) -> x509.Certificate:
    """As _load_cert_arg, parsed also when a server presented it (for commands giving no verdict)."""
    cert = _load_cert_arg(target)
    if isinstance(cert, x509.Certificate):
        return cert
    return read_certificate(cert, source=f"the certificate {target} presented")


def cmd_verify(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    if args.fresh:
        return _verify_fresh(args, policy)
    cert = _load_cert_arg(args.target)
    trust = _server_trust(args, args.target, cert)
    appraisal, rc = verify_certificate(cert, policy=policy, now=_now(args), trust=trust)
    extra = {"certificate_sha256": rc.cert_sha256, "pubkey_sha256": rc.spki_sha256.hex()} if rc else None
    return _emit(appraisal, args.json, extra)


def _server_trust(args: argparse.Namespace, target: str, cert: bytes | x509.Certificate) -> Trust:
    """_trust, plus the reference documents (GPU RIMs) a server holds for the certificate it presented."""
    trust = _trust(args)
    if not _is_server(target):
        return trust
    from .client.fetch import parse_target
    from .client.references import with_references
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    return with_references(parse_target(target), der, trust)


def _verify_fresh(args: argparse.Namespace, policy: Policy) -> int:
    from .client.fresh import EvidenceApiBusy, verify_fresh
    from .client.verify import verify_server
    if not args.target.startswith("https://"):
        raise UsageError("--fresh needs a live server (https://HOST:PORT), not a file")
    now, trust = _now(args), _trust(args)
    server = _verified_or_exit(lambda: verify_server(args.target, policy, now=now, trust=trust))
    if server is None:
        return EXIT_VERDICT
    try:
        fresh = verify_fresh(server, policy, now=now, trust=server.trust or trust)
    except EvidenceApiBusy as exc:  # rate-limited or unavailable: no verdict either way
        print(f"ratls: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The certificate passed; the verdict printed is the fresh evidence's (nonce, same key, policy).
    return _emit(fresh, args.json, {"certificate_sha256": server.cert_sha256, "fresh": True})


def _verified_or_exit(fn):  # type: ignore[no-untyped-def]
    from .errors import PolicyViolation
    try:
        return fn()
    except PolicyViolation as exc:
        if exc.appraisal is not None:
            print(exc.appraisal.summary(), file=sys.stderr)
        print(f"ratls: refusing: {exc}", file=sys.stderr)
        return None


def cmd_pin(args: argparse.Namespace) -> int:
    from .client.verify import verify_server
    server = _verified_or_exit(lambda: verify_server(args.target, load_policy(args.policy), now=_now(args),
                                                     trust=_trust(args)))
    if server is None:
        return EXIT_VERDICT
    if args.pem:
        Path(args.pem).write_text(server.cert_pem)
    print(server.curl_pin)
    return EXIT_OK


def _tool_args(args: argparse.Namespace) -> list[str]:
    rest = list(args.tool_args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise UsageError("nothing to run", hint=f"ratls {args.command} --policy P -- <{args.command} arguments>")
    return rest


def cmd_curl(args: argparse.Namespace) -> int:
    from .client.tools import run_curl
    got = _verified_or_exit(lambda: run_curl(_tool_args(args), load_policy(args.policy)))
    return EXIT_VERDICT if got is None else got[1]


def cmd_grpcurl(args: argparse.Namespace) -> int:
    from .client.tools import run_grpcurl
    got = _verified_or_exit(lambda: run_grpcurl(_tool_args(args), load_policy(args.policy)))
    return EXIT_VERDICT if got is None else got[1]


def cmd_proxy(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from .client.fetch import parse_target
    from .client.proxy import VerifyingProxy, serve
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen '{args.listen}' is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8000")
    target, policy, trust = parse_target(args.target), load_policy(args.policy), _trust(args)
    if not args.lazy and not _proxy_target_passes(args, policy, trust):
        return EXIT_VERDICT
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    proxy = VerifyingProxy(host, int(port), target, policy, trust=trust, clock=_clock(args))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(proxy, stop)

    asyncio.run(main())
    print(f"ratls proxy stopped: connections {proxy.stats.connections}, refused {proxy.stats.refused}",
          file=sys.stderr)
    return EXIT_OK


def _proxy_target_passes(args: argparse.Namespace, policy: Policy, trust: Trust) -> bool:
    """Verify the target once before listening: a policy that no connection can pass is reported
    here and now, not as empty replies to every client with the reason only in the log. Every
    connection is still verified on its own later."""
    from .client.verify import verify_server
    try:
        server = _verified_or_exit(lambda: verify_server(args.target, policy, now=_now(args), trust=trust))
    except EvidenceError as exc:  # no TLS handshake: nothing to judge yet
        raise EvidenceError(f"cannot verify the proxy target {args.target} before listening: {exc.message}",
                            hint="start the server first and check --target, or pass --lazy to start the proxy "
                                 "now and verify on each connection") from None
    if server is None:
        print(f"ratls: not starting the proxy: {args.target} fails the policy, so every connection would be "
              "refused", file=sys.stderr)
        return False
    print(f"ratls proxy: {args.target} passed the policy (certificate {server.cert_sha256[:16]}); each connection "
          "is verified again", file=sys.stderr)
    return True


def cmd_cert_issue(args: argparse.Namespace) -> int:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ratls" / "collateral"
    settings = registry.PlatformSettings(
        sim_state_dir=Path(args.sim_dir) if args.sim_dir else None,
        collateral=None if args.pccs_url == "none" else registry.CollateralSource(cache, args.pccs_url))
    platform = registry.create(args.platform, settings)
    from .issue import issue_certificate
    key = generate_key(args.curve)
    lifetime = parse_duration(args.lifetime, what="--lifetime")
    if lifetime < timedelta(minutes=1):
        raise UsageError("--lifetime must be at least 1m")
    devices = None
    if args.sim_gpus:
        from .platforms.nvidia.collector import SimGpuCollector
        from .platforms.nvidia.sim import sim_gpu_dir
        devices = SimGpuCollector(sim_gpu_dir(settings.sim_state_dir), args.sim_gpus)
    issued = issue_certificate(platform, key, now=_now(args), lifetime=lifetime, sans=args.san or None,
                               common_name=args.cn, devices=devices)
    if platform.simulated:
        print("WARNING: SIMULATED platform - this certificate carries no hardware evidence", file=sys.stderr)
    Path(args.out_cert).write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    passphrase = os.environ.get(args.key_passphrase_env) if args.key_passphrase_env else None
    if args.key_passphrase_env and not passphrase:
        raise UsageError(f"environment variable {args.key_passphrase_env} is empty or unset")
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(args.out_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    print(f"wrote {args.out_cert} and {args.out_key} (mode 0600) for platform {platform.name}")
    return EXIT_OK


def _claims_view(claims: Claims) -> dict[str, Any]:
    """The claims as JSON (bytes as hex), the models claim {"manifest": d, "models": {name: d}}
    flattened into "model_manifest" and "models" ({name: digest}). Kept apart, because a model
    may be called "manifest"; keys of the models claim not known here go to "models_other"."""
    view = claims.to_json()
    models = view.pop("models", None)
    if not isinstance(models, dict):
        return view
    if "manifest" in models:
        view["model_manifest"] = models["manifest"]
    view["models"] = models.get("models") or {}
    other = {k: v for k, v in models.items() if k not in ("manifest", "models")}
    if other:
        view["models_other"] = other
    return view


def cmd_cert_show(args: argparse.Namespace) -> int:
    """Decode a certificate (a file, or what https://HOST:PORT or HOST:PORT presents); nothing is
    verified. ``--json`` prints one object; keys are only ever added:

    - ``subject``, ``sans``, ``not_before``/``not_after`` (ISO 8601), ``certificate_sha256`` and
      ``pubkey_sha256`` (hex);
    - ``claims``: the ratls/1 claims, bytes as hex, with the models claim flat:
      ``model_manifest`` (digest of the whole manifest) and ``models`` (``{name: digest}``);
    - ``evidence``: ``platform``, ``media_type``, ``bytes``, ``endorsements`` (labels);
    - ``report`` (absent for an unknown media type): the decoded hardware report, whose
      ``measurements`` identify the launched image, named as in the Appraisal and in policies:
      SEV-SNP and sim ``measurement``; TDX and sim-tdx ``mrtd``, ``rtmr0``-``rtmr3``,
      ``mrconfigid``, ``mrowner``, ``mrownerconfig``, ``mrseam``; Azure vTPM the hardware
      report's plus ``pcr0``-``pcr23`` as reported (``report.hcl`` has the HCL details).
    """
    rc = parse_ratls(_x509_arg(args.file))
    info: dict[str, Any] = {
        "subject": rc.cert.subject.rfc4514_string(),
        "sans": rc.sans(),
        "not_before": rc.cert.not_valid_before_utc.isoformat(),
        "not_after": rc.cert.not_valid_after_utc.isoformat(),
        "certificate_sha256": rc.cert_sha256,
        "pubkey_sha256": rc.spki_sha256.hex(),
        "claims": _claims_view(rc.claims),
        "evidence": {"platform": rc.evidence.platform, "media_type": rc.evidence.media_type,
                     "bytes": len(rc.evidence.raw), "endorsements": sorted(rc.evidence.endorsements)},
    }
    report = registry.describe(rc.evidence)
    if report is not None:
        info["report"] = report
    if rc.devices:
        info["devices"] = {d.label: registry.describe_device(d) for d in rc.devices}
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    if registry.simulated(rc.evidence.platform):
        print("SIMULATED platform - not hardware evidence")
    if any(d.get("simulated") for d in info.get("devices", {}).values()):
        print("SIMULATED GPU - not hardware evidence")
    _print_fields(info)
    return EXIT_OK


def _print_fields(info: dict[str, Any]) -> None:
    for key, value in info.items():
        if key == "report":
            # What identifies the launched image, one per line: what a reader compares first.
            value = dict(value)
            for name, digest in value.pop("measurements", {}).items():
                print(f"{name}: {digest}")
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


def cmd_policy_init(args: argparse.Namespace) -> int:
    from .errors import PolicyViolation
    from .platforms.sim.roots import local_root_sha256, simulated_root_sha256
    from .policy_init import check_simulated_root, policy_from_observation
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:  # before any work: nothing to lose yet
        raise UsageError(f"'{out}' already exists (it may be a policy someone reviewed); not overwriting it",
                         hint="pass --force to replace it, or choose another --out path")
    cert = _x509_arg(args.source)
    rc = parse_ratls(cert)
    now = _now(args)
    trust = _server_trust(args, args.source, cert)
    sim_root = simulated_root_sha256(rc.evidence)
    sim_note = None
    if sim_root is not None:
        state = _sim_state_dir(args)
        try:
            sim_note = check_simulated_root(sim_root, local_root_sha256(rc.evidence.platform, state), state)
        except PolicyViolation as exc:
            print(f"ratls: refusing to pin a simulated root: {exc}", file=sys.stderr)
            return EXIT_VERDICT
        trust.simulated_roots = (sim_root,)
    if rc.devices:
        from .platforms.nvidia.sim import roots_to_pin
        try:
            gpu_roots, gpu_note = roots_to_pin(rc.devices, _sim_state_dir(args))
        except PolicyViolation as exc:
            print(f"ratls: refusing to pin a simulated root: {exc}", file=sys.stderr)
            return EXIT_VERDICT
        trust.simulated_roots = (*trust.simulated_roots, *gpu_roots)
        if gpu_note:
            print(f"ratls: {gpu_note}", file=sys.stderr)
    appraisal, _ = verify_certificate(cert, policy=None, now=now, trust=trust)
    if not appraisal.ok:
        print(appraisal.summary(), file=sys.stderr)
        print("ratls: refusing to write a policy from evidence that is not authentic", file=sys.stderr)
        return EXIT_VERDICT
    if sim_note is not None:
        print(f"ratls: {sim_note}", file=sys.stderr)
    text = policy_from_observation(appraisal, rc, now, sim_root=sim_root, sim_root_note=sim_note)
    if not _starting_policy_accepts(text, cert, now, trust):
        return EXIT_VERDICT
    if out is None:
        sys.stdout.write(text)
        return EXIT_OK
    _write_policy(out, text)
    print(f"wrote {out} (trust on first use: review it before relying on it)", file=sys.stderr)
    _save_config_beside(out, args.source, rc)
    return EXIT_OK


def _starting_policy_accepts(text: str, cert: Any, now: datetime, trust: Trust) -> bool:
    """A starting policy never weakens a rule to fit the server (it writes debug: false
    whatever it saw): evidence that fails its platform rules gets no policy, with the reasons;
    what it does accept but weakens a default is said (SEPT_VE_DISABLE 0 on Azure TDX)."""
    import yaml

    from .policy import parse_policy
    from .policy_report import explain_policy
    policy = parse_policy(yaml.safe_load(text), source="<starting policy>")
    appraisal, _ = verify_certificate(cert, policy=policy, now=now, trust=trust)
    refused = [c for c in appraisal.failures
               if c.name.startswith("policy.") and not c.name.startswith("policy.claims.")]
    for check in refused:
        print(f"[FAIL] {check.name}: {check.detail}", file=sys.stderr)
    if refused:
        print("ratls: refusing to write a policy: the server's evidence fails even the starting policy's platform "
              "rules (the [FAIL] lines above; a debuggable guest can be read by the host, a GPU whose RIMs are "
              "missing was not measured - give --rim-dir)", file=sys.stderr)
        return False
    for rule in explain_policy(policy).warnings:
        if rule.topic != "trust_on_first_use":
            print(f"ratls: note: {rule.topic}: {rule.text}", file=sys.stderr)
    return True


def _save_config_beside(out: Path, source: str, rc: Any) -> None:
    """Keep the attested config document next to the policy, so that a later `ratls policy diff`
    names the keys that changed, not only that the digest did. Best effort: the policy stands
    without it."""
    if not _is_server(source) or not rc.claims.config:
        return
    from cryptography.hazmat.primitives.serialization import Encoding

    from .client.fetch import parse_target
    from .policy_cli import fetch_config_document, save_config_snapshot
    try:
        document = fetch_config_document(parse_target(source), rc.cert.public_bytes(Encoding.DER))
        saved = save_config_snapshot(out, document, expected_digest=rc.claims.config)
    except (RatlsError, OSError) as exc:
        print(f"ratls: the config document was not saved beside the policy: {exc}", file=sys.stderr)
        return
    print(f"wrote {saved} (the attested config, for 'ratls policy diff')", file=sys.stderr)


def _write_policy(out: Path, text: str) -> None:
    from .fileutil import write_atomic
    try:
        # Atomic: a crash or a full disk leaves the old file (or none), never half a policy.
        write_atomic(out, text.encode())
    except OSError as exc:
        raise UsageError(f"cannot write the policy to '{out}': {exc.strerror or exc}",
                         hint="check that its directory is writable") from None


def _add_server_commands(sub: Any) -> None:
    """``serve`` and ``doctor`` come from the gateway, found through its entry points: a client
    install has the names (and a message saying what to install) but never imports the server."""
    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            add = ep.load()
        except ImportError:
            sub.add_parser(ep.name, help=f"{ep.name}: needs the server extra (not installed here)").set_defaults(
                func=_serve_missing)
        else:
            add(sub)


def _serve_missing(args: argparse.Namespace) -> int:
    raise UsageError("the gateway is not installed in this environment",
                     hint="install the server extra: pip install '.[server]' from a checkout (README: Install)")


# ---- parser ----

def _common_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", metavar="TIME", help="verify as of TIME (ISO 8601 or Unix seconds) instead of now")
    p.add_argument("--json", action="store_true", help="print the Appraisal as JSON (schema ratls-appraisal/1)")
    p.add_argument("--crl", action="append", metavar="FILE", help="AMD CRL (PEM or DER); repeatable")
    p.add_argument("--require-crl", action="store_true", help="fail unless a CRL for the product is supplied")
    p.add_argument("--online", action="store_true",
                   help="allow fetching missing VCEKs from AMD KDS, missing TDX collateral from a PCCS and missing "
                        "NVIDIA RIMs from NVIDIA's RIM service")
    p.add_argument("--kds-cache", metavar="DIR", help="on-disk cache for AMD KDS responses, TDX collateral and "
                                                      "NVIDIA RIMs")
    p.add_argument("--pccs-url", metavar="URL", help="TDX collateral source for --online (default: Intel PCS)")
    p.add_argument("--rim-dir", metavar="DIR", help="NVIDIA RIMs named by RIM ID (<ID>.xml), used before asking "
                                                    "the server (and, with --online, NVIDIA's RIM service)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ratls", description="RA-TLS certificates with hardware attestation evidence",
                     epilog=f"platforms: {registry.choices_text()}")
    parser.add_argument("--version", action="version", version=f"ratls {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_evidence_commands(sub)
    _add_verify_commands(sub)
    _add_cert_commands(sub)
    _add_policy_commands(sub)
    _add_server_commands(sub)
    registry.add_commands(sub)
    return parser


def _add_evidence_commands(sub: Any) -> None:
    ev = sub.add_parser("evidence", help="raw hardware evidence").add_subparsers(dest="sub", required=True,
                                                                                 parser_class=_Parser)
    evv = ev.add_parser("verify", help="verify a raw attestation report (no certificate)")
    evv.add_argument("--platform", required=True,
                     help=registry.choices_text() + "; devices: " + ", ".join(
                         d.name + (f" ({', '.join(d.aliases)})" if d.aliases else "") for d in registry.device_types()))
    evv.add_argument("--report", required=True, metavar="R.bin",
                     help="raw evidence: SNP ATTESTATION_REPORT, TDX quote, Azure vTPM evidence JSON, or a GPU's "
                          "SPDM request||response (raw, hex or base64 text)")
    evv.add_argument("--collateral", metavar="FILE",
                     help="TDX collateral (QuoteCollateralV3 JSON: TCB info, QE identity, CRLs, issuer chains)")
    evv.add_argument("--vcek", metavar="FILE", help="VCEK or VLEK certificate, PEM or DER")
    evv.add_argument("--chain", metavar="FILE", help="ASK/ASVK (+ARK) PEM; the ARK must match a pinned AMD root. "
                                                     "GPUs: the device certificate chain, leaf-first PEM")
    evv.add_argument("--nonce", metavar="HEX", help="GPUs: the 32-byte request nonce the report must carry")
    evv.add_argument("--driver-rim", metavar="F", help="GPUs: NVIDIA's driver RIM (SWID tag XML) to compare with")
    evv.add_argument("--vbios-rim", metavar="F", help="GPUs: NVIDIA's VBIOS RIM (SWID tag XML) to compare with")
    evv.add_argument("--policy", metavar="P", help="appraise against this policy (else authenticity only)")
    evv.add_argument("--report-data", metavar="HEX", help="require REPORT_DATA to equal these 64 bytes")
    evv.add_argument("--sim-dir", metavar="DIR", help="simulated platform state directory (platform sim)")
    _common_verify(evv)
    evv.set_defaults(func=cmd_evidence_verify)


def _add_verify_commands(sub: Any) -> None:
    v = sub.add_parser("verify", help="full RA-TLS verification of a certificate file or a live server")
    v.add_argument("target", metavar="FILE|https://HOST:PORT")
    v.add_argument("--policy", required=True, metavar="P")
    v.add_argument("--fresh", action="store_true",
                   help="also challenge the evidence API with a random nonce (fresh evidence, same key)")
    _common_verify(v)
    v.set_defaults(func=cmd_verify)

    pin = sub.add_parser("pin", help="verify a server, print sha256//<base64> of its key for curl --pinnedpubkey")
    pin.add_argument("target", metavar="https://HOST:PORT")
    pin.add_argument("--policy", required=True, metavar="P")
    pin.add_argument("--pem", metavar="FILE", help="also write the verified certificate here")
    _common_verify(pin)
    pin.set_defaults(func=cmd_pin)
    for tool, func in (("curl", cmd_curl), ("grpcurl", cmd_grpcurl)):
        tp = sub.add_parser(tool, help=f"verify, then run {tool} pinned to the verified certificate")
        tp.add_argument("--policy", required=True, metavar="P")
        tp.add_argument("tool_args", nargs=argparse.REMAINDER, metavar=f"-- {tool.upper()}-ARGS")
        tp.set_defaults(func=func)

    px = sub.add_parser("proxy", help="local verifying forwarder for any client (plaintext in, RA-TLS out)")
    px.add_argument("--listen", required=True, metavar="HOST:PORT")
    px.add_argument("--target", required=True, metavar="HOST:PORT")
    px.add_argument("--policy", required=True, metavar="P")
    px.add_argument("--lazy", action="store_true",
                    help="do not verify the target at start (to start before the server is up); every connection "
                         "is verified either way. Without it, a target failing the policy exits 1, an unreachable "
                         "one exits 2")
    _common_verify(px)
    px.set_defaults(func=cmd_proxy)


def _add_cert_commands(sub: Any) -> None:
    cert = sub.add_parser("cert", help="issue or inspect RA-TLS certificates").add_subparsers(
        dest="sub", required=True, parser_class=_Parser)
    ci = cert.add_parser("issue", help="issue a certificate bound to fresh evidence")
    ci.add_argument("--platform", required=True,
                    help=f"{registry.choices_text()} (a hardware one inside that CVM)")
    ci.add_argument("--out-cert", required=True, metavar="C")
    ci.add_argument("--out-key", required=True, metavar="K")
    ci.add_argument("--san", action="append", metavar="NAME", help="DNS name or IP; repeatable")
    ci.add_argument("--cn", default="ratls-gateway", help="subject common name")
    ci.add_argument("--lifetime", default="24h", help="validity, e.g. 24h (default), 30m, 7d")
    ci.add_argument("--curve", default="p256", choices=["p256", "p384"])
    ci.add_argument("--key-passphrase-env", metavar="VAR", help="encrypt the key with the passphrase in $VAR")
    ci.add_argument("--sim-dir", metavar="DIR", help="simulated platform state directory")
    ci.add_argument("--sim-gpus", type=int, default=0, metavar="N", choices=range(0, 17),
                    help="also attest N (1-16) simulated NVIDIA GPUs (their state lives in the --sim-dir)")
    ci.add_argument("--pccs-url", default="https://api.trustedservices.intel.com", metavar="URL",
                    help="TDX: where to fetch the collateral embedded in the certificate ('none': embed none)")
    ci.add_argument("--at", metavar="TIME", help=argparse.SUPPRESS)
    ci.set_defaults(func=cmd_cert_issue)
    cs = cert.add_parser("show", help="decode a certificate's claims and evidence (no verification)")
    cs.add_argument("file")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=cmd_cert_show)


def _add_policy_commands(sub: Any) -> None:
    pol = sub.add_parser("policy", help="policy tooling").add_subparsers(dest="sub", required=True,
                                                                         parser_class=_Parser)
    from .policy_cli import add_policy_commands  # here, not at the top: policy_cli imports this module
    add_policy_commands(pol)
    pi = pol.add_parser("init", help="write a starting policy from observed evidence (trust on first use)")
    pi.add_argument("--from", dest="source", required=True, metavar="FILE|URL")
    pi.add_argument("--out", metavar="P", help="write the policy here (default: stdout); refuses an existing file")
    pi.add_argument("--force", action="store_true", help="replace an existing --out file")
    pi.add_argument("--at", metavar="TIME")
    pi.add_argument("--rim-dir", metavar="DIR", help="NVIDIA RIMs named by RIM ID (<ID>.xml), for GPU evidence")
    pi.add_argument("--sim-dir", metavar="DIR",
                    help="local simulator state to compare a simulated root with (default: as 'ratls sim root')")
    pi.set_defaults(func=cmd_policy_init)


class _PipeSafeStdout:
    """stdout for one command. When the reader goes away early (``ratls verify ... | head -1``),
    further output is dropped instead of raising BrokenPipeError, so the command runs to its end
    and its own exit code (a PASS 0, a FAIL 1) is the one returned."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._drop_output()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._drop_output()

    def _drop_output(self) -> None:
        self.broken = True
        # The interpreter flushes the real stdout at exit, with what is still buffered; pointed at
        # devnull that flush succeeds instead of printing "Exception ignored ... BrokenPipeError"
        # and exiting 120 (the approach of the Python docs, "Note on SIGPIPE").
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a real descriptor (tests capture stdout): nothing is flushed at exit

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer...
        return getattr(self.stream, name)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, UnreadableCertificate, UnreadableEvidence) as exc:
        print(f"ratls: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RatlsError as exc:
        # Unreadable input (policy, configuration) or an unreachable server: exit 2. Verdicts
        # are reported through the Appraisal and exit 1.
        print(f"ratls: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    real_stdout = sys.stdout
    guard = _PipeSafeStdout(real_stdout)
    sys.stdout = guard
    try:
        code = _run(argv)
        guard.flush()  # a reader that left shows here at the latest, while the code is still ours
        return code
    finally:
        sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
