"""A file that is not a certificate is bad input (exit 2, a readable message, no Rust debug text);
a certificate that parses but fails verification, and whatever a server presents, stay verdicts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import ratls.client.fetch
from ratls.cert import UnreadableCertificate, read_certificate
from ratls.cli import main
from ratls.pipeline import verify_certificate
from ratls.testing.tls_server import serving
from ratls.timeutil import utcnow

STRICT = Path(__file__).resolve().parents[2] / "config/policies/snp-strict.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _broken(cert: Path, tmp_path: Path) -> dict[str, Path]:
    import ssl
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    files = {"truncated.pem": cert.read_bytes()[:300], "truncated.der": der[:200],
             "garbage.bin": bytes(range(7, 207)), "empty.pem": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize("command", [["verify", "{f}", "--policy", "{p}"], ["cert", "show", "{f}"],
                                     ["policy", "init", "--from", "{f}"],
                                     ["policy", "diff", "--policy", "{p}", "{f}"]])
def test_unreadable_file_exits_2_readably(command: list[str], cert: Path, policy: Path, tmp_path: Path,
                                          capsys) -> None:
    for name, path in _broken(cert, tmp_path).items():
        code, out, err = run(capsys, *(a.format(f=path, p=policy) for a in command))
        assert code == 2, (name, err)
        assert f"'{path}'" in err and ("not a PEM or DER X.509 certificate (truncated?)" in err or "empty" in err)
        assert "copy or download it again" in err
        assert "ParseError" not in err and "kind:" not in err and "{" not in err and out == ""


def test_certificate_that_parses_but_fails_is_still_a_verdict(cert: Path, capsys) -> None:
    code, out, _ = run(capsys, "verify", str(cert), "--policy", str(STRICT))
    assert code == 1 and "does not allow simulation" in out


def test_tampered_certificate_is_a_verdict(cert: Path, policy: Path, tmp_path: Path, capsys) -> None:
    import ssl
    der = bytearray(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    der[-10] ^= 0x01  # inside the signature: still a well-formed certificate
    tampered = tmp_path / "tampered.der"
    tampered.write_bytes(bytes(der))
    code, out, _ = run(capsys, "verify", str(tampered), "--policy", str(policy))
    assert code == 1 and "[FAIL] certificate.self-signature" in out


def test_garbage_a_server_presents_is_a_readable_verdict(policy: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # As if OpenSSL had accepted the Certificate message but it is not a certificate we can read.
    monkeypatch.setattr(ratls.client.fetch, "fetch_certificate", lambda target, timeout: b"\x30\x82\x01" + b"x" * 40)
    code, out, _ = run(capsys, "verify", "https://gw.invalid:8443", "--policy", str(policy))
    assert code == 1
    assert "[FAIL] certificate.parse: the certificate is not a PEM or DER X.509 certificate (truncated?)" in out
    assert "ParseError" not in out
    appraisal, rc = verify_certificate(b"garbage", policy=None, now=utcnow())
    assert rc is None and [c.name for c in appraisal.failures] == ["certificate.parse"]


@pytest.fixture
def garbage_server() -> Iterator[int]:
    """Answers every connection with bytes that are not TLS at all."""
    def handle(conn: socket.socket, _served: int) -> None:
        with conn:
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n" + bytes(range(256)))

    with serving(handle) as port:
        yield port


def test_server_sending_garbage_is_unreachable_not_a_pass(garbage_server: int, policy: Path, capsys) -> None:
    code, out, err = run(capsys, "verify", f"https://127.0.0.1:{garbage_server}", "--policy", str(policy))
    assert code == 2 and out == "" and "cannot complete a TLS handshake" in err


def test_read_certificate_is_typed() -> None:
    with pytest.raises(UnreadableCertificate, match=r"^'x\.pem' is not a PEM or DER X\.509 certificate") as info:
        read_certificate(b"-----BEGIN CERTIFICATE-----\nMIIB", source="'x.pem'")
    assert "cut off" in str(info.value)


@pytest.mark.parametrize("platform", ["azure-snp-vtpm", "azure-tdx-vtpm"])
@pytest.mark.parametrize(("content", "says"), [
    (b"not json at all", "Azure evidence is not JSON"),
    (b'{"version": 3, "tpm_quote": {}, "hcl_report": ""}', "Azure evidence version 3 is not one this verifier reads"),
    (b'{"version": 1, "tpm_quote": {"message": "00"}}', "the TPM quote lacks pcrs, signature"),
    (b'{"version": 1, "tpm_quote": {"message": "zz", "signature": "00", "pcrs": []}}', "24 PCR values"),
    (b'["a", "list"]', "must be a JSON object"),
])
def test_unreadable_azure_evidence_exits_2(platform: str, content: bytes, says: str, tmp_path: Path,
                                           capsys) -> None:
    # exit 1 is only ever a security verdict: evidence in no layout ratls reads is bad input
    report = tmp_path / "evidence.json"
    report.write_bytes(content)
    code, out, err = run(capsys, "evidence", "verify", "--platform", platform, "--report", str(report))
    assert code == 2, (out, err)
    assert out == "" and err.startswith("ratls: ") and says in err
    assert "give the evidence JSON as recorded" in err or "upgrade ratls-gateway" in err


def test_trustee_v2_azure_evidence_verifies_from_the_cli(vectors: Path, capsys) -> None:
    path = vectors / "azure/snp_milan_v2_trustee/evidence-v2.json"
    if not path.is_file():
        pytest.skip(f"trustee's version 2 Azure vector not found at {path}")
    bound = "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"
    code, out, err = run(capsys, "evidence", "verify", "--platform", "azure-snp-vtpm", "--report", str(path),
                         "--report-data", bound)
    assert code == 0, out + err
    assert "[ok  ] azure.user-data" in out
    code, out, _ = run(capsys, "evidence", "verify", "--platform", "azure-snp-vtpm", "--report", str(path),
                       "--report-data", "00" * 48)
    assert code == 1 and "[FAIL] binding.report-data" in out  # readable, authentic, bound elsewhere: a verdict
