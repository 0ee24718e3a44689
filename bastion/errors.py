"""Domain errors raised by services; the API layer renders them in the Hugging Face format.

Each error carries its HTTP status and, where the Hub has one, the X-Error-Code the
huggingface_hub client dispatches on (RepoNotFound, RevisionNotFound, EntryNotFound, ...).
"""

from __future__ import annotations


class BastionError(Exception):
    status: int = 400
    code: str | None = None

    def __init__(self, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more JSON body fields (e.g. the existing repo's url on 409)


class BadRequest(BastionError):
    status = 400
    code = "BadRequest"


class InvalidCredentials(BastionError):
    """A presented token is unknown, malformed, expired or revoked."""

    status = 401
    code = "InvalidCredentials"

    def __init__(self, message: str = "Invalid credentials in Authorization header") -> None:
        # The client treats exactly this message as "bad token", not "missing repo".
        super().__init__("Invalid credentials in Authorization header")
        self.detail = message


class AuthenticationRequired(BastionError):
    status = 401
    code = "AuthenticationRequired"


class Forbidden(BastionError):
    status = 403
    code = "Forbidden"


class NotFound(BastionError):
    status = 404
    code = "NotFound"


class RepoNotFound(NotFound):
    code = "RepoNotFound"

    def __init__(self, message: str = "Repository not found") -> None:
        super().__init__(message)


class RevisionNotFound(NotFound):
    code = "RevisionNotFound"


class EntryNotFound(NotFound):
    code = "EntryNotFound"


class Conflict(BastionError):
    status = 409
    code = "Conflict"


class PreconditionFailed(BastionError):
    status = 412
    code = "PreconditionFailed"


class PayloadTooLarge(BastionError):
    status = 413
    code = "PayloadTooLarge"


class RangeNotSatisfiable(BastionError):
    status = 416
    code = "RangeNotSatisfiable"


class MailLinksUnavailable(BastionError):
    """Mail that needs a link, on an instance that does not know its public URL."""

    status = 503
    code = "MailLinksUnavailable"


class NotImplementedFeature(BastionError):
    status = 501
    code = "NotImplemented"
