"""The ``tdx`` policy section as the registry sees it: parser, default, explanation."""

from __future__ import annotations

from ...policy import PolicySection
from .explain import explain_tdx, observed_tdx, tdx_check_spec
from .policy import TdxPolicy, parse_tdx_policy

TDX_POLICY: PolicySection[TdxPolicy] = PolicySection("tdx", "tdx", parse_tdx_policy, TdxPolicy(),
                                            explain=explain_tdx, check_spec=tdx_check_spec,
                                            observe=observed_tdx)
