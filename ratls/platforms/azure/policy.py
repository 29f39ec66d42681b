"""The ``vtpm:`` section of a verifier policy: the guest image an Azure confidential VM measured
into its vTPM. The hardware report under the paravisor is appraised with the ``sev-snp`` or
``tdx`` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...yamlfile import KeyedReader


@dataclass(frozen=True)
class VtpmPolicy:
    """Azure vTPM: allowed SHA-256 PCR values by index (any listed value passes)."""

    pcrs: dict[int, list[bytes]] = field(default_factory=dict)


def parse_vtpm_policy(m: KeyedReader) -> VtpmPolicy:
    policy = VtpmPolicy(pcrs=m.indexed_hex("pcrs", 32, 23))
    m.finish()
    return policy

