"""The ``vtpm`` policy section as the registry sees it: parser, default, explanation."""

from __future__ import annotations

from ...policy import PolicySection
from .explain import explain_vtpm, vtpm_check_spec
from .policy import VtpmPolicy, parse_vtpm_policy

VTPM_POLICY: PolicySection[VtpmPolicy] = PolicySection("vtpm", "vtpm", parse_vtpm_policy, VtpmPolicy(),
                                            explain=explain_vtpm, check_spec=vtpm_check_spec)
