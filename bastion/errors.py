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


class UnknownCredentials(InvalidCredentials):
    """A presented credential that names no token at all: malformed, unknown, an unreadable header.
    Audited per source (revoked and expired tokens are audited as uses of that token)."""


class AuthenticationRequired(BastionError):
    status = 401
    code = "AuthenticationRequired"


class Forbidden(BastionError):
    status = 403
    code = "Forbidden"


class ReauthenticationRequired(Forbidden):
    """A sensitive account change (authz SUDO_PERMISSIONS) from a session whose password confirmation is too
    old: 403; web pages send the browser to /settings/sudo instead."""


class SSORequired(Forbidden):
    """An organization's resource asked for by a member without a live SSO session for it: 403 over the API,
    git and the hub client (the message names SSO); web pages send the browser to the org's SSO login."""

    def __init__(self, org: str, message: str) -> None:
        super().__init__(message)
        self.org = org


class GatedRepo(BastionError):
    """A gated repo's contents without an accepted access request: 401 for anonymous callers, else 403.

    The texts are the Hub's (clients show them verbatim; huggingface_hub raises GatedRepoError on the
    code). `state`: anonymous | none | pending | rejected | token (a fine-grained token without
    canReadGatedRepos). The "ask for access" text names the repo's page, an absolute URL only the
    request knows, so the message is completed by `text(base_url)` where the response is built.
    """

    code = "GatedRepo"
    KINDS = {"model": "model", "dataset": "dataset", "space": "space"}
    PAGE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

    def __init__(self, state: str, repo_type: str, repo_id: str) -> None:
        self.state, self.repo_type, self.repo_id = state, repo_type, repo_id
        self.status = 401 if state == "anonymous" else 403
        super().__init__(self.text(""))

    def page(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.PAGE_PREFIX.get(self.repo_type, '')}{self.repo_id}"

    def text(self, base_url: str) -> str:
        what = f"{self.KINDS.get(self.repo_type, 'repo')} {self.repo_id}"
        if self.state == "anonymous":
            return (f"Access to {what} is restricted. You must have access to it and be authenticated to access "
                    "it. Please log in.")
        if self.state == "pending":
            return f"Your request to access {what} is awaiting a review from the repo authors."
        if self.state == "rejected":
            return f"Your request to access {what} has been rejected by the repo's authors."
        if self.state == "token":
            return (f"Access to {what} is restricted: this fine-grained token cannot read gated repositories "
                    "(create one with canReadGatedRepos).")
        return (f"Access to {what} is restricted and you are not in the authorized list. Visit "
                f"{self.page(base_url)} to ask for access.")


class NotFound(BastionError):
    status = 404
    code = "NotFound"


class RepoNotFound(NotFound):
    code = "RepoNotFound"

    def __init__(self, message: str = "Repository not found") -> None:
        super().__init__(message)


class RepoMoved(BastionError):
    """The repo asked for by a name it had before a move: a 307 to the same URL under its current name
    (the Hub's answer; the client follows relative redirects, also for HEAD on resolve URLs)."""

    status = 307
    code = None

    def __init__(self, old_id: str, new_id: str) -> None:
        super().__init__(f"Repository moved to {new_id}")
        self.old_id, self.new_id = old_id, new_id


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


class UnprocessableEntity(BastionError):
    """Well-formed but refused: the Hub's 422, e.g. a file path that climbs out of the repository."""

    status = 422
    code = "UnprocessableEntity"


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


class StorageUnavailable(BastionError):
    """A storage region's object store failed (after its retries): the request may be tried again."""

    status = 503
    code = "StorageUnavailable"


class NotImplementedFeature(BastionError):
    status = 501
    code = "NotImplemented"
