"""SMPP 3.4 for smsgw: codec (`pdu`), text encodings (`text`), delivery receipts (`receipts`),
rate limiting (`ratelimit`), the asyncio ESME session (`session`) and connector settings
(`connector`). The daemons import the submodules they need; nothing is re-exported here so that
importing the codec does not pull in asyncio or pydantic.
"""
