"""The processor daemon: applies rules to inbound messages (`smsgw processor`)."""
