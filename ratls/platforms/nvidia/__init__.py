"""NVIDIA confidential-computing GPUs (Hopper, Blackwell): SPDM evidence, device chain, RIMs."""
