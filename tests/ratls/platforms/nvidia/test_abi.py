"""SPDM report parsing: every vector parses to what its README and NVIDIA's/trustee's own
parsers say; strictness cases are refused with typed errors that name the offset."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from ratls.errors import EvidenceError, UnreadableEvidence
from ratls.platforms.nvidia.abi import (
    REQUEST_LEN,
    decode_report_input,
    encode_opaque,
    encode_report,
    parse_opaque,
    parse_report,
    rim_ids,
    vbios_version_text,
)
from ratls.platforms.nvidia.types import SIGNATURE_LEN, GpuArch, GpuReport, MeasurementBlock, OpaqueType

from . import gen

N931 = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
# file -> request nonce, driver, VBIOS, project, project SKU, chip SKU, FWID prefix (None: absent)
REPORTS = {
    "hopper_trustee/hopperAttestationReport.txt":
        (N931, "550.90.07", "96.00.9f.00.01", "1010", "0200", "882", "f5c384ae"),
    "go-nvtrust/attestationReport.txt":
        ("4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e", "545.00", "96.00.5e.00.01",
         "1010", "0200", "882", None),
    "nvidia-attestation-sdk/hopper_580.159.03/hopperAttestationReport.txt":
        ("5bb22e377702d4e1e8215a903ba094826b9ac7f731dee1fe8102958bf2840aca", "580.159.03", "96.00.74.00.20",
         "1010", "0205", "862", "f1ae7d00"),
    "nvidia-attestation-sdk/hopper_535.86.09/hopperAttestationReport.txt":
        ("27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66", "535.86.09", "96.00.5e.00.01",
         "1010", "0200", "882", None),
    "nvidia-attestation-sdk/hopper_570.124.03/hopperAttestationReportExpired.txt":
        (N931, "570.124.03", "96.00.5e.00.04", "1010", "0205", "862", "e9960d6a"),
    "nvidia-attestation-sdk/hopper_invalid_signature/hopperAttestationReportInvalidSignature.txt":
        (N931, "560.00", "96.00.a5.00.01", "G520", "0200", "885", "87a82912"),
    "nvidia-attestation-sdk/gb100_575.32/blackwellAttestationReport.txt":
        (N931, "575.32", "97.00.88.00.0f", "G525", "0220", "886", "d090cab1"),
}
SDK_580 = "nvidia-attestation-sdk/hopper_580.159.03"


def load(nvidia_vectors: Path, rel: str) -> GpuReport:
    return parse_report(decode_report_input((nvidia_vectors / rel).read_bytes()))


@pytest.fixture(scope="module")
def good() -> bytes:
    return encode_report(gen.REQUEST_NONCE, gen.blocks(), gen.opaque_fields(), gen.RESPONSE_NONCE,
                         lambda _: bytes(SIGNATURE_LEN))


# --- vectors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", sorted(REPORTS))
def test_vector_reports_parse(nvidia_vectors: Path, rel: str) -> None:
    nonce, driver, vbios, project, sku, chip_sku, fwid = REPORTS[rel]
    report = load(nvidia_vectors, rel)
    o = report.opaque
    assert report.request_nonce.hex() == nonce
    assert (o.driver_version, o.vbios_version, o.project, o.project_sku, o.chip_sku) == (driver, vbios, project,
                                                                                        sku, chip_sku)
    assert (o.fwid.hex()[:8] if o.fwid else None) == fwid
    assert sorted(report.blocks) == list(range(1, 65))
    assert all(len(b.value) == 48 and b.value_type == 1 for b in report.blocks.values())
    assert o.nvdec0_status == 0x55 and o.chip_info is None
    assert report.signed_bytes + report.signature == report.raw


@pytest.mark.parametrize("rel", sorted(REPORTS))
def test_vector_reports_reencode_byte_for_byte(nvidia_vectors: Path, rel: str) -> None:
    """The encoder lays reports out exactly as GPUs do: re-encoding a parsed report gives its bytes."""
    report = load(nvidia_vectors, rel)
    again = encode_report(report.request_nonce, report.blocks, report.opaque.fields, report.response_nonce,
                          lambda _: report.signature)
    assert again == report.raw


def test_vector_opaque_versions_and_flags(nvidia_vectors: Path) -> None:
    sdk580 = load(nvidia_vectors, f"{SDK_580}/hopperAttestationReport.txt").opaque
    assert (sdk580.opaque_data_version, sdk580.feature_flag) == (1, 0)
    gb100 = load(nvidia_vectors, "nvidia-attestation-sdk/gb100_575.32/blackwellAttestationReport.txt").opaque
    assert (gb100.opaque_data_version, gb100.feature_flag) == (0, None)
    assert gb100.fields[OpaqueType.SYS_ENABLE_STATUS] == b"\x07\x07"


def test_hopper_580_matches_nvidia_parsed_output(nvidia_vectors: Path) -> None:
    report = load(nvidia_vectors, f"{SDK_580}/hopperAttestationReport.txt")
    req = json.loads((nvidia_vectors / SDK_580 / "spdm_req_parsed_output.json").read_text())
    raw = report.raw
    assert [int(req[k], 16) for k in ("SPDMVersion", "RequestResponseCode", "Param1", "Param2", "SlotIDParam")] == [
        raw[0], raw[1], raw[2], raw[3], raw[36]]
    assert req["Nonce"] == "0x" + report.request_nonce.hex()
    resp = json.loads((nvidia_vectors / SDK_580 / "spdm_parsed_output.json").read_text())
    head = raw[REQUEST_LEN:]
    assert [int(resp[k], 16) for k in ("SPDMVersion", "RequestResponseCode", "Param1", "Param2")] == list(head[:4])
    assert report.spdm_version == int(resp["SPDMVersion"], 16)
    assert resp["NumberOfBlocks"] == resp["MeasurementRecord"]["NumberOfBlocks"] == len(report.blocks)
    assert resp["MeasurementRecordLength"] == sum(7 + len(b.value) for b in report.blocks.values())
    assert resp["Nonce"] == "0x" + report.response_nonce.hex()
    assert resp["OpaqueLength"] == len(encode_opaque(report.opaque.fields))
    assert resp["Signature"] == "0x" + report.signature.hex()
    for index, block in resp["MeasurementRecord"]["MeasurementBlocks"].items():
        ours = report.blocks[int(index)]
        assert (ours.value_type, len(ours.value)) == (block["DMTFSpecMeasurementValueType"],
                                                       block["DMTFSpecMeasurementValueSize"])
        assert "0x" + ours.value.hex() == block["DMTFSpecMeasurementValue"]
    _compare_opaque(report, resp["OpaqueData"]["OpaqueDataField"])


def _compare_opaque(report: GpuReport, nvidia: dict[str, object]) -> None:
    fields = report.opaque.fields
    for key, value in nvidia.items():
        kind = OpaqueType[key.removeprefix("OPAQUE_FIELD_ID_")]
        if kind == OpaqueType.MSRSCNT:
            assert list(struct.unpack(f"<{len(fields[kind]) // 4}I", fields[kind])) == value
        else:
            assert "0x" + fields[kind].hex() == value, kind
    # NVIDIA's parsed output omits the two newest fields; we keep them
    assert set(fields) - {OpaqueType[k.removeprefix("OPAQUE_FIELD_ID_")] for k in nvidia} == {
        OpaqueType.OPAQUE_DATA_VERSION, OpaqueType.FEATURE_FLAG}


def test_trustee_report_matches_trustee_claims(nvidia_vectors: Path) -> None:
    report = load(nvidia_vectors, "hopper_trustee/hopperAttestationReport.txt")
    claims = json.loads((nvidia_vectors / "hopper_trustee/hopperAttestationReport-claims.txt").read_text())
    config, o = claims["config"], report.opaque
    assert (o.driver_version, o.vbios_version, o.project, o.project_sku, o.chip_sku) == (
        config["driver_version"], config["vbios_version"], config["project"], config["project_sku"],
        config["chip_sku"])
    assert o.fwid is not None and o.fwid.hex() == config["fwid"]
    assert {int(k): v for k, v in claims["measurements"].items()} == {i: b.value.hex()
                                                                      for i, b in report.blocks.items()}
    counts = struct.unpack("<64I", o.fields[OpaqueType.MSRSCNT])
    assert {int(k): v for k, v in config["measurement_count"].items()} == {i + 1: n for i, n in enumerate(counts)}
    for key, kind in (("board_id", OpaqueType.BOARD_ID), ("gpu_info", OpaqueType.GPU_INFO),
                      ("cpr_info", OpaqueType.CPRINFO), ("project_sku_mod", OpaqueType.PROJECT_SKU_MOD)):
        assert o.fields[kind].hex() == config[key]
    assert o.fields[OpaqueType.CHIP_SKU_MOD].rstrip(b"\0").decode() == config["chip_sku_mod"]
    # trustee renders these one-byte statuses as characters: 0x55 is "U"
    assert chr(o.nvdec0_status or 0) == config["nvdec0_status"]
    assert chr(o.fields[OpaqueType.PROTECTED_PCIE_STATUS][0]) == config["protected_pcie_status"]


def test_coco_report_with_trailing_byte_is_refused_as_stored(nvidia_vectors: Path) -> None:
    data = decode_report_input((nvidia_vectors / "hopper_trustee/hopper_coco_report1.txt").read_bytes())
    assert len(data) == 4130 and data[-1] == 0
    with pytest.raises(EvidenceError, match="1 trailing byte.*offset 4129") as info:
        parse_report(data)
    assert not isinstance(info.value, UnreadableEvidence)
    assert parse_report(data[:-1]).request_nonce.hex().startswith("87d8e24a")


def test_evidence_json_items_parse(nvidia_vectors: Path) -> None:
    seen = 0
    for path in sorted((nvidia_vectors / "nvidia-attestation-sdk/evidence_json").glob("*.json")):
        for item in json.loads(path.read_text()):
            report = parse_report(decode_report_input(item["evidence"].encode()))
            assert report.request_nonce.hex() == item["nonce"]
            assert report.raw == base64.b64decode(item["evidence"])
            seen += 1
    assert seen == 7


# --- input decoding ----------------------------------------------------------------------------

def test_decode_hex_base64_raw(good: bytes) -> None:
    hex_text = good.hex().encode()
    wrapped = b"\n".join(hex_text[i:i + 64] for i in range(0, len(hex_text), 64)) + b"\n"
    assert decode_report_input(hex_text) == decode_report_input(wrapped) == good
    assert decode_report_input(good.hex().upper().encode()) == good
    assert decode_report_input(base64.b64encode(good) + b"\r\n") == good
    assert decode_report_input(good) == good
    assert decode_report_input(bytearray(good)) == good


@pytest.mark.parametrize("data, match", [
    (b"", "empty"), (b" \n\t", "empty"), (b"abc", "odd length"), (b"11e0zz!!", "neither hex nor base64"),
    (b"EeAB/w=", "neither hex nor base64"),
])
def test_decode_refuses_text_that_is_no_encoding(data: bytes, match: str) -> None:
    with pytest.raises(UnreadableEvidence, match=match):
        decode_report_input(data)


def test_decode_refuses_non_bytes_and_huge_input() -> None:
    with pytest.raises(UnreadableEvidence):
        decode_report_input("11e0")  # type: ignore[arg-type]
    with pytest.raises(UnreadableEvidence, match="refusing"):
        decode_report_input(b"0" * (5 << 20))


# --- strictness --------------------------------------------------------------------------------

def test_generated_report_parses(good: bytes) -> None:
    report = parse_report(good)
    assert report.request_nonce == gen.REQUEST_NONCE and report.response_nonce == gen.RESPONSE_NONCE
    assert [b.index for b in report.blocks.values()] == list(range(1, 65))
    assert report.opaque.fwid == gen.FWID and report.signature == bytes(96)
    assert report.raw[:4] == bytes([0x11, 0xE0, 0x01, 0xFF]) and report.raw[36] == 0
    assert report.raw[REQUEST_LEN:REQUEST_LEN + 4] == bytes([0x11, 0x60, 0, 0])


@pytest.mark.parametrize("size", [0, 1, 2, 36])
def test_too_short_for_a_request_is_unreadable(good: bytes, size: int) -> None:
    with pytest.raises(UnreadableEvidence, match="too short"):
        parse_report(good[:size])


def test_wrong_request_code_is_unreadable(good: bytes) -> None:
    with pytest.raises(UnreadableEvidence, match=r"byte 1 is 0xe1"):
        parse_report(good[:1] + b"\xe1" + good[2:])


def test_other_spdm_version_is_unreadable_and_named(good: bytes) -> None:
    with pytest.raises(UnreadableEvidence, match=r"SPDM version\) is 0x12"):
        parse_report(b"\x12" + good[1:])


def test_response_version_and_code(good: bytes) -> None:
    with pytest.raises(EvidenceError, match="response SPDM version at offset 37 is 0x12"):
        parse_report(good[:37] + b"\x12" + good[38:])
    with pytest.raises(EvidenceError, match="response code at offset 38 is 0x7f"):
        parse_report(good[:38] + b"\x7f" + good[39:])


def test_unsigned_request_is_refused(good: bytes) -> None:
    with pytest.raises(EvidenceError, match="did not ask for a signature"):
        parse_report(good[:2] + b"\x00" + good[3:])


def _with_blocks(blocks: list[bytes], count: int | None = None) -> bytes:
    """A report whose measurement record is exactly *blocks* (pre-encoded), zero signature."""
    good = encode_report(gen.REQUEST_NONCE, [], gen.opaque_fields(), gen.RESPONSE_NONCE, lambda _: bytes(96))
    record = b"".join(blocks)
    n = len(blocks) if count is None else count
    head = good[:REQUEST_LEN + 4] + bytes([n]) + len(record).to_bytes(3, "little")
    return head + record + good[REQUEST_LEN + 8:]


def _block(index: int, spec: int = 1, value: bytes = bytes(48), value_size: int | None = None,
           size: int | None = None) -> bytes:
    dmtf = struct.pack("<BH", 1, len(value) if value_size is None else value_size) + value
    return struct.pack("<BBH", index, spec, len(dmtf) if size is None else size) + dmtf


def test_block_rules() -> None:
    assert len(parse_report(_with_blocks([_block(1), _block(64)])).blocks) == 2
    cases = [
        ([_block(1), _block(1)], None, "offset 100 repeats index 1"),
        ([_block(0)], None, "index 0"),
        ([_block(65)], None, "index 65"),
        ([_block(255)], None, "index 255"),
        ([_block(2, spec=0x02)], None, "MeasurementSpecification 0x02"),
        ([_block(3, value_size=47)], None, "DMTF value size 47 does not match MeasurementSize 51"),
        ([_block(4, size=2, value=b"")], None, "truncated"),
        ([_block(1)], 2, "NumberOfBlocks is 2"),
        ([_block(1)], 0, "NumberOfBlocks is 0"),
    ]
    for blocks, count, match in cases:
        with pytest.raises(EvidenceError, match=match):
            parse_report(_with_blocks(blocks, count))


def test_record_length_past_the_end_is_refused(good: bytes) -> None:
    bad = bytearray(good)
    bad[REQUEST_LEN + 5:REQUEST_LEN + 8] = (1 << 24 - 1).to_bytes(3, "little")
    with pytest.raises(EvidenceError, match="measurement record needs 8388608 bytes at offset 45"):
        parse_report(bytes(bad))


def test_trailing_and_missing_signature_bytes(good: bytes) -> None:
    with pytest.raises(EvidenceError, match="1 trailing byte"):
        parse_report(good + b"\0")
    with pytest.raises(EvidenceError, match="signature needs 96 bytes"):
        parse_report(good[:-1])


def test_truncation_at_every_length_is_typed(good: bytes) -> None:
    for cut in range(len(good)):
        with pytest.raises(EvidenceError):
            parse_report(good[:cut])


# --- opaque data -------------------------------------------------------------------------------

def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("<HH", kind, len(value)) + value


def test_opaque_typed_views() -> None:
    data = (tlv(3, b"575.32\0") + tlv(6, bytes.fromhex("008800970f000000")) + tlv(17, b"g525\0")
            + tlv(35, b"GB202\0\0") + tlv(11, b"\xaa") + tlv(34, b"\x01\x00") + tlv(36, b"\x02\x00")
            + tlv(18, b"0220") + tlv(16, b"\0\0"))
    o = parse_opaque(data)
    assert (o.driver_version, o.vbios_version, o.project, o.chip_info, o.project_sku) == (
        "575.32", "97.00.88.00.0f", "G525", "GB202", "0220")
    assert (o.nvdec0_status, o.opaque_data_version, o.feature_flag, o.fwid) == (0xAA, 1, 2, None)
    assert o.fields[16] == b"\0\0" and list(o.fields) == [3, 6, 17, 35, 11, 34, 36, 18, 16]


def test_unknown_opaque_types_are_kept() -> None:
    o = parse_opaque(tlv(200, b"future") + tlv(0xFFFF, b"") + tlv(25, b"\x01\x02\x03"))
    assert o.fields == {200: b"future", 0xFFFF: b"", 25: b"\x01\x02\x03"}


@pytest.mark.parametrize("data, match", [
    (tlv(20, bytes(47)), "FWID \\(20\\) at offset 0 is 47 bytes, expected 48"),
    (tlv(6, bytes(7)), "VBIOS_VERSION \\(6\\) at offset 0 is 7 bytes"),
    (tlv(11, b""), "NVDEC0_STATUS"),
    (tlv(34, b"\x01"), "OPAQUE_DATA_VERSION"),
    (tlv(36, b"\x01\x00\x00"), "FEATURE_FLAG"),
    (tlv(12, bytes(6)), "MSRSCNT \\(12\\) at offset 0 is 6 bytes, not a multiple of 4"),
    (tlv(22, bytes(9)), "SWITCH_PDI"),
    (tlv(3, b"1.0\0") + tlv(3, b"1.0\0"), "DRIVER_VERSION \\(3\\) at offset 8 appears twice"),
    (tlv(200, b"") + tlv(200, b""), "type 200 at offset 4 appears twice"),
    (tlv(3, b"\0"), "DRIVER_VERSION \\(3\\) at offset 0 is empty"),
    (tlv(3, b"550\x0090"), "DRIVER_VERSION \\(3\\) at offset 0 is not NUL-padded printable ASCII"),
    (tlv(6, bytes(8)) + tlv(17, b"10\xff0"), "PROJECT \\(17\\) at offset 12"),
    (tlv(3, b"550.90.07") + b"\x03", "truncated: opaque field type needs 2 bytes at offset 13"),
    (tlv(3, b"550.90.07")[:-1], "truncated"),
])
def test_opaque_rules(data: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        parse_opaque(data)


def test_opaque_offsets_are_report_offsets(good: bytes) -> None:
    report = parse_report(good)
    opaque = encode_opaque(report.opaque.fields)
    at = len(good) - SIGNATURE_LEN - len(opaque)
    assert good[at:at + 4] == struct.pack("<HH", 6, 8)  # the first TLV: VBIOS version
    bad = good[:at] + struct.pack("<H", 20) + good[at + 2:]  # now claims to be an 8-byte FWID
    with pytest.raises(EvidenceError, match=f"FWID \\(20\\) at offset {at} is 8 bytes"):
        parse_report(bad)


def test_vbios_version_text() -> None:
    assert vbios_version_text(bytes.fromhex("009f009601000000")) == "96.00.9f.00.01"
    assert vbios_version_text(bytes.fromhex("0074009620000000")) == "96.00.74.00.20"
    with pytest.raises(EvidenceError):
        vbios_version_text(bytes(7))


# --- RIM ids -----------------------------------------------------------------------------------

def test_rim_ids_of_vectors(nvidia_vectors: Path) -> None:
    trustee = load(nvidia_vectors, "hopper_trustee/hopperAttestationReport.txt")
    assert rim_ids(trustee, GpuArch.HOPPER) == ("NV_GPU_DRIVER_GH100_550.90.07",
                                                "NV_GPU_VBIOS_1010_0200_882_96009F0001")
    go = load(nvidia_vectors, "go-nvtrust/attestationReport.txt")
    assert rim_ids(go, GpuArch.HOPPER) == ("NV_GPU_DRIVER_GH100_545.00", "NV_GPU_VBIOS_1010_0200_882_96005E0001")
    gb100 = load(nvidia_vectors, "nvidia-attestation-sdk/gb100_575.32/blackwellAttestationReport.txt")
    assert rim_ids(gb100, GpuArch.BLACKWELL) == ("NV_GPU_CC_DRIVER_GB100_575.32",
                                                 "NV_GPU_VBIOS_G525_0220_886_970088000F")


def test_rim_ids_blackwell_chip_info_and_refusals() -> None:
    report = parse_report(encode_report(gen.REQUEST_NONCE, gen.blocks(2), gen.opaque_fields(chip_info=b"gb202\0"),
                                        gen.RESPONSE_NONCE, lambda _: bytes(96)))
    assert rim_ids(report, GpuArch.BLACKWELL)[0] == "NV_GPU_CC_DRIVER_GB202_580.159.03"
    assert rim_ids(report, GpuArch.HOPPER)[0] == "NV_GPU_DRIVER_GH100_580.159.03"
    fields = gen.opaque_fields()
    del fields[OpaqueType.PROJECT]
    missing = parse_report(encode_report(gen.REQUEST_NONCE, [], fields, gen.RESPONSE_NONCE, lambda _: bytes(96)))
    with pytest.raises(EvidenceError, match="no PROJECT"):
        rim_ids(missing, GpuArch.HOPPER)
    fields = gen.opaque_fields()
    fields[OpaqueType.DRIVER_VERSION] = b"550/../x\0"
    odd = parse_report(encode_report(gen.REQUEST_NONCE, [], fields, gen.RESPONSE_NONCE, lambda _: bytes(96)))
    with pytest.raises(EvidenceError, match="characters a RIM id cannot contain"):
        rim_ids(odd, GpuArch.HOPPER)


# --- encoder -----------------------------------------------------------------------------------

def test_encoder_accepts_sequence_or_mapping_and_checks_inputs() -> None:
    blocks = gen.blocks(3)
    as_map = {b.index: b for b in blocks}
    zero = lambda _: bytes(96)  # noqa: E731
    a = encode_report(gen.REQUEST_NONCE, blocks, {}, gen.RESPONSE_NONCE, zero)
    assert a == encode_report(gen.REQUEST_NONCE, as_map, {}, gen.RESPONSE_NONCE, zero)
    assert parse_report(a).blocks == as_map
    values = {b.index: b.value for b in blocks}  # index -> value, as the simulated GPU passes them
    assert encode_report(gen.REQUEST_NONCE, values, {}, gen.RESPONSE_NONCE, zero) == a
    with pytest.raises(ValueError):
        encode_report(b"short", blocks, {}, gen.RESPONSE_NONCE, zero)
    with pytest.raises(ValueError):
        encode_report(gen.REQUEST_NONCE, blocks, {}, gen.RESPONSE_NONCE, lambda _: bytes(95))
    with pytest.raises(ValueError):
        encode_opaque({1 << 16: b""})
    assert encode_opaque({3: b"x"}) == b"\x03\x00\x01\x00x"
    assert MeasurementBlock(1, 1, b"") in parse_report(
        encode_report(gen.REQUEST_NONCE, [MeasurementBlock(1, 1, b"")], {}, gen.RESPONSE_NONCE, zero)
    ).blocks.values()


def test_sign_callback_gets_every_byte_before_the_signature() -> None:
    seen: list[bytes] = []
    raw = encode_report(gen.REQUEST_NONCE, gen.blocks(1), {}, gen.RESPONSE_NONCE,
                        lambda data: seen.append(data) or bytes(96))
    assert seen == [raw[:-96]] and parse_report(raw).signed_bytes == seen[0]
