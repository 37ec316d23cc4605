"""`smsgw smsc-sim`: an SMPP 3.4 SMSC simulator for tests, demos and benchmarks."""
