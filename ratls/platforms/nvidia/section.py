"""The ``nvidia-gpu`` policy section as the registry sees it (shared by real and simulated GPUs)."""

from __future__ import annotations

from ...policy import PolicySection
from .explain import explain_gpu, gpu_check_spec, observed_gpu
from .policy import GpuPolicy, parse_gpu_policy

NVIDIA_GPU_POLICY: PolicySection[GpuPolicy] = PolicySection("nvidia-gpu", "nvidia_gpu", parse_gpu_policy,
                                                            GpuPolicy(), explain=explain_gpu, observe=observed_gpu,
                                                            check_spec=gpu_check_spec)
