"""The ``sev-snp`` policy section as the registry sees it: parser, default, explanation."""

from __future__ import annotations

from ...policy import PolicySection
from .explain import explain_snp, observed_snp, snp_check_spec
from .policy import SnpPolicy, parse_snp_policy

SNP_POLICY: PolicySection[SnpPolicy] = PolicySection("sev-snp", "snp", parse_snp_policy, SnpPolicy(),
                                            explain=explain_snp, check_spec=snp_check_spec,
                                            observe=observed_snp)
