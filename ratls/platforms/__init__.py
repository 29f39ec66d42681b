"""Platform implementations: one folder per TEE (abi, collect, verify, appraise)."""
