"""AMD SEV-SNP: abi (bytes <-> typed report), collect, verify, appraise."""
