"""Azure collection with tpm2-tools replaced by a runner that replays recorded vTPM output
(there is no vTPM here), and the metadata endpoints served on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ratls.errors import CollectionError, ConfigError
from ratls.platforms.azure.collect import collect_vtpm, fetch_td_quote, fetch_vcek, run_tpm2
from ratls.platforms.azure.evidence import parse_azure_evidence


def _replay(vm: Path, commands: list[list[str]]):  # type: ignore[no-untyped-def]
    quote = json.loads((vm / "tpm_quote.json").read_text())

    def run(args: list[str], work: Path) -> None:
        commands.append(args)
        if args[0] == "tpm2_nvread":
            (work / args[args.index("-o") + 1]).write_bytes((vm / "hcl_report.bin").read_bytes())
        elif args[0] == "tpm2_quote":
            (work / "quote.msg").write_bytes(bytes.fromhex(quote["message"]))
            (work / "quote.sig").write_bytes(bytes.fromhex(quote["signature"]))
            (work / "pcrs.bin").write_bytes(b"".join(bytes.fromhex(p) for p in quote["pcrs"]))

    return run


def test_commands_and_stale_quote_refused(vectors: Path) -> None:
    commands: list[list[str]] = []
    report_data = bytes(range(64))
    with pytest.raises(CollectionError, match="does not carry the requested qualifying data"):
        collect_vtpm(report_data, run=_replay(vectors / "azure/snp_milan_trustee", commands))
    assert commands[0][:2] == ["tpm2_nvread", "-C"] and "0x01400001" in commands[0]
    quote_cmd = commands[1]
    assert quote_cmd[0] == "tpm2_quote" and quote_cmd[quote_cmd.index("-q") + 1] == report_data.hex()
    assert quote_cmd[quote_cmd.index("-c") + 1] == "0x81000003"


def _attest(extra: bytes, pcrs: list[bytes]) -> bytes:
    import hashlib
    import struct

    name = b"\x00\x0b" + bytes(32)
    return (struct.pack(">IH", 0xFF544347, 0x8018) + struct.pack(">H", len(name)) + name
            + struct.pack(">H", len(extra)) + extra + struct.pack(">QIIB", 1, 2, 3, 1) + struct.pack(">Q", 7)
            + struct.pack(">IHB", 1, 0x000B, 3) + b"\xff\xff\xff"
            + struct.pack(">H", 32) + hashlib.sha256(b"".join(pcrs)).digest())


def test_fresh_quote_is_assembled_into_evidence(vectors: Path) -> None:
    vm = vectors / "azure/snp_milan_trustee"
    pcrs = [bytes.fromhex(p) for p in json.loads((vm / "tpm_quote.json").read_text())["pcrs"]]
    report_data = bytes(range(64))

    def run(args: list[str], work: Path) -> None:
        if args[0] == "tpm2_nvread":
            (work / "hcl.bin").write_bytes((vm / "hcl_report.bin").read_bytes())
        else:
            (work / "quote.msg").write_bytes(_attest(bytes.fromhex(args[args.index("-q") + 1]), pcrs))
            (work / "quote.sig").write_bytes(b"s" * 256)
            (work / "pcrs.bin").write_bytes(b"".join(pcrs))

    ev = collect_vtpm(report_data, run=run)
    assert ev.pcrs == tuple(pcrs) and ev.td_quote is None
    from ratls.platforms.azure.tpm import parse_tpm_quote

    assert parse_tpm_quote(ev.tpm_message).extra_data == report_data
    assert parse_azure_evidence(ev.to_json()) == ev


def test_missing_tpm2_tools_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="tpm2_nvread is not installed"):
        run_tpm2(["tpm2_nvread", "-C", "o", "0x01400001"], tmp_path)


def test_failing_tpm2_tool_reports_its_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "tpm2_nvread"
    tool.write_text("#!/bin/sh\necho 'ERROR: Esys_NV_Read(0x18B) - tpm:handle(1):the handle is not correct' >&2\n"
                    "exit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CollectionError, match="the handle is not correct"):
        run_tpm2(["tpm2_nvread", "-C", "o", "0x01400001"], tmp_path)


class _Imds:
    def __init__(self, routes: dict[str, bytes]) -> None:
        self.routes, self.seen = routes, []  # type: ignore[var-annotated]
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                imds.seen.append((self.command, self.path, self.headers.get("Metadata")))
                body = imds.routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def do_GET(self) -> None:  # noqa: N802
                self._reply()

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reply()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_metadata_endpoints(vectors: Path) -> None:
    import base64

    td_quote = (vectors / "tdx/v4_azure_trustee/quote.bin").read_bytes()
    imds = _Imds({"/acc/tdquote": json.dumps({"quote": base64.urlsafe_b64encode(td_quote).decode()}).encode(),
                  "/metadata/THIM/amd/certification": json.dumps({"vcekCert": "V", "certificateChain": "C"}).encode(),
                  "/broken": b"{}"})
    try:
        assert fetch_td_quote(b"\0" * 1024, imds.url("/acc/tdquote")) == td_quote
        assert fetch_vcek(imds.url("/metadata/THIM/amd/certification")) == {"vcek": b"V", "chain": b"C"}
        assert all(seen[2] == "true" for seen in imds.seen)  # the Metadata header IMDS requires
        with pytest.raises(CollectionError, match="did not return a TD quote"):
            fetch_td_quote(b"\0" * 1024, imds.url("/broken"))
        with pytest.raises(CollectionError, match="metadata request"):
            fetch_vcek(imds.url("/missing"))
    finally:
        imds.close()


def test_recorded_evidence_parses_like_collected(vectors: Path) -> None:
    ev = parse_azure_evidence((vectors / "azure/tdx_trustee/evidence-v1.json").read_bytes())
    again = parse_azure_evidence(ev.to_json())
    assert again == ev
