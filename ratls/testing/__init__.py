"""Test fakes shipped with the library (like go-sev-guest's ``testing``): a fake
configfs-tsm whose kernel side is played by the simulated SNP chain."""
