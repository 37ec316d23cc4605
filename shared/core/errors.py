"""The project's exception hierarchy: one root, specific subclasses (procrastinate's shape)."""


class SmsGatewayError(Exception):
    """Root of every error smsgw raises on purpose."""


class ConfigError(SmsGatewayError):
    """The configuration is invalid; `main()` maps it to exit code 78 (EX_CONFIG)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class SchemaVersionError(SmsGatewayError):
    """The database schema is older than this daemon needs, or newer than it supports."""


class DatabaseUnavailable(SmsGatewayError):
    """The database cannot be reached right now; callers answer 'retry later'."""


class DuplicateInbound(SmsGatewayError):
    """An inbound message with the same provider id was stored before."""


class SmppError(SmsGatewayError):
    """Base of SMPP errors."""


class SmppProtocolError(SmppError):
    """Bytes on the wire that are not valid SMPP (bad length, truncated, garbage)."""


class SmppBindRejected(SmppError):
    """The SMSC refused our bind."""


class SmppResponseTimeout(SmppError):
    """No response arrived within the timeout: the outcome is unknown, not failed."""
