"""The error tree. Every error Doorstep raises on purpose derives from DoorstepError.

Retryable conditions (a broker that is down) differ from permanent ones (a broker that refused
our credentials), and errors that match a builtin also inherit it, so callers can catch either.
"""


class DoorstepError(Exception):
    """Root of every error Doorstep raises on purpose."""


class ConfigError(DoorstepError, ValueError):
    """The configuration is wrong. ``problems`` lists every finding, each naming its dotted key."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class Retryable(DoorstepError):
    """A condition that may clear by itself: try again later, with backoff."""


class Permanent(DoorstepError):
    """A condition that will not clear without a person changing something."""


class CaptureError(DoorstepError):
    """The frame source failed."""


class CameraUnavailable(CaptureError, Retryable):
    """The camera is missing, gone or timed out; retry with backoff."""


class EncoderUnavailable(CaptureError, Permanent, LookupError):
    """The requested encoder does not exist on this machine."""


class SealError(DoorstepError, ValueError):
    """A sealed artifact is malformed, truncated, tampered with, or not for our keys."""


class SignatureError(SealError):
    """A signature or hash-chain link does not verify."""


class KeyFileError(DoorstepError, ValueError):
    """A key file is missing, unreadable or not in the expected format."""


class BrokerUnavailable(Retryable, ConnectionError):
    """The MQTT broker cannot be reached right now."""


class BrokerRefused(Permanent, PermissionError):
    """The MQTT broker refused us (bad credentials, not authorised)."""


class OutboxError(DoorstepError, OSError):
    """The outbox could not store or read an artifact."""


class DiskFull(OutboxError):
    """The outbox's disk or quota is full even after eviction."""


class NoGpio(Permanent, ImportError):
    """This machine has no GPIO that gpiozero can drive (no pin library, or not a Pi)."""
