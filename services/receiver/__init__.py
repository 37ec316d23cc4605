"""The receiver daemon: HTTP submit API, provider webhooks, SMPP MO (`smsgw receiver`)."""
