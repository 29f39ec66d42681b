"""``ratls policy explain`` and ``ratls policy diff``: the I/O around ``policy_report`` (reading
files, fetching the certificate and the served config document) and the exit codes."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from .cert import RatlsCertificate
from .cli import EXIT_OK, EXIT_VERDICT, _common_verify, _is_server, _load_cert_arg, _now, _read, _server_trust
from .client.fetch import Target, parse_target
from .client.pinning import context_trusting, origin
from .errors import EvidenceError, UsageError
from .fileutil import write_atomic
from .pipeline import verify_certificate
from .policy import Policy, load_policy
from .policy_report import (
    ConfigSources,
    config_body,
    config_digest,
    diff_policy,
    evidence_verified,
    explain_policy,
    render_diff,
    render_explanation,
    wants_config_document,
)

CONFIG_PATH = "/.well-known/ratls/config"
SNAPSHOT_SUFFIX = ".config.json"
MAX_DOCUMENT = 1 << 20


# ---- the config snapshot beside a policy ----

def config_snapshot_path(policy_path: str | Path) -> Path:
    """``<P>.config.json``: the config document a policy was made from, kept next to it."""
    return Path(str(policy_path) + SNAPSHOT_SUFFIX)


def save_config_snapshot(policy_path: str | Path, document: Any, *, expected_digest: str | None = None) -> Path:
    """Write the config document (as served, or the bare config) beside the policy, so that a later
    ``ratls policy diff`` can name the keys that changed. With ``expected_digest`` (the certificate's
    config claim) a document that is not the attested one is refused instead of saved."""
    body = config_body(document)
    digest = config_digest(body)
    if expected_digest is not None and digest != expected_digest:
        raise EvidenceError(f"the config document has digest {digest}, not the attested {expected_digest}",
                            hint="fetch it again from the gateway that presented the certificate")
    path = config_snapshot_path(policy_path)
    text = json.dumps({"digest": digest, "config": body}, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode())
    return path


def read_config_document(path: str | Path) -> Any:
    raw = _read(str(path), "config document")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"config document '{path}' is not JSON: {exc}",
                         hint="pass the JSON saved from GET /.well-known/ratls/config") from None


# ---- fetching ----

def _live_target(text: str) -> Target | None:
    return parse_target(text) if _is_server(text) else None  # the rule 'ratls verify' uses


def fetch_config_document(target: Target, cert_der: bytes, *, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(f"{origin(target)}{CONFIG_PATH}",  # noqa: S310 - always https
                                     headers={"Accept": "application/json"})
    # Straight to the address the certificate came from, like the certificate fetch: no proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context_trusting(cert_der)))
    try:
        with opener.open(request, timeout=timeout) as resp:
            raw = resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        raise EvidenceError(f"{CONFIG_PATH} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EvidenceError(f"cannot fetch {CONFIG_PATH} over a connection pinned to the presented certificate: "
                            f"{reason}", hint="the server may have rotated its certificate; run the diff again") \
            from None
    if len(raw) > MAX_DOCUMENT:
        raise EvidenceError(f"{CONFIG_PATH} is larger than {MAX_DOCUMENT} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise EvidenceError(f"{CONFIG_PATH} did not answer JSON") from None


def _config_sources(args: argparse.Namespace, policy: Policy, target: Target | None, cert_der: bytes,
                    rc: RatlsCertificate | None, evidence_ok: bool) -> ConfigSources:
    was, was_source = None, None
    if args.config_was:  # read even when unused: a wrong path is worth saying
        was, was_source = read_config_document(args.config_was), args.config_was
    claims = rc.claims if rc is not None else None
    if not wants_config_document(policy, claims):
        return ConfigSources(was=was, was_source=was_source)
    sibling = config_snapshot_path(args.policy)
    if was is None and sibling.is_file():
        was, was_source = read_config_document(sibling), str(sibling)
    served, error = None, None
    if target is None:
        error = "the target is a certificate file; diff the live server (https://HOST:PORT) to see its configuration"
    elif not evidence_ok:
        error = "not fetched: the evidence failed verification, so its config claim says nothing about the gateway"
    else:
        try:
            served = fetch_config_document(target, cert_der)
        except EvidenceError as exc:
            error = str(exc)
    return ConfigSources(served=served, served_error=error, was=was, was_source=was_source)


# ---- commands ----

def cmd_policy_explain(args: argparse.Namespace) -> int:
    explanation = explain_policy(load_policy(args.policy))
    print(json.dumps(explanation.to_json(), indent=2) if args.json else render_explanation(explanation))
    return EXIT_OK


def cmd_policy_diff(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    target = _live_target(args.target)
    # Unreachable server or unreadable file: EvidenceError/UsageError, which main() turns into exit 2
    # (a file that is no certificate too, as for 'ratls verify').
    cert = _load_cert_arg(args.target)
    cert_der = cert if isinstance(cert, bytes) else cert.public_bytes(Encoding.DER)
    trust = _server_trust(args, args.target, cert_der)
    appraisal, rc = verify_certificate(cert_der, policy=policy, now=_now(args), trust=trust)
    sources = _config_sources(args, policy, target, cert_der, rc, evidence_verified(appraisal))
    label = f"{target.host}:{target.port}" if target is not None else args.target
    diff = diff_policy(policy, appraisal, rc.claims if rc is not None else None, target=label, config=sources)
    print(json.dumps(diff.to_json(), indent=2) if args.json else render_diff(diff))
    # A failing target is a security verdict; the diff printed is its explanation.
    return EXIT_OK if diff.ok else EXIT_VERDICT


def add_policy_commands(pol: Any) -> None:
    """Add 'explain' and 'diff' to the subparsers of 'ratls policy'."""
    pe = pol.add_parser("explain", help="say in plain language what a policy accepts, refuses and leaves open")
    pe.add_argument("policy", metavar="P")
    pe.add_argument("--json", action="store_true", help="print the explanation as JSON (ratls-policy-explain/1)")
    pe.set_defaults(func=cmd_policy_explain)
    # 'resolve': the verification options are those of 'ratls verify', except that --json is ours
    pd = pol.add_parser("diff", help="explain, field by field, why a certificate or live server passes or fails",
                        conflict_handler="resolve")
    pd.add_argument("target", metavar="FILE|https://HOST:PORT")
    pd.add_argument("--policy", required=True, metavar="P")
    pd.add_argument("--config-was", metavar="FILE",
                    help=f"the config document the policy was made from (default: P{SNAPSHOT_SUFFIX} if present)")
    _common_verify(pd)
    pd.add_argument("--json", action="store_true", help="print the diff as JSON (ratls-policy-diff/1)")
    pd.set_defaults(func=cmd_policy_diff)
