"""Outgoing e-mail over SMTP (BASTION_SMTP_URL), queued on a database transaction.

A message is handed to the sender only after the transaction that queued it commits, and is sent
from a background thread, so a request's timing never depends on whether a mail went out. Links in
mail are built by `Mailer.link()` alone, from BASTION_PUBLIC_URL: never from a request, whose Host
header the sender chooses (a reset link to their host would hand them the victim's account).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from sqlalchemy import event
from sqlalchemy.orm import Session

from bastion.errors import MailLinksUnavailable

log = logging.getLogger("bastion.mail")
NO_PUBLIC_URL = ("This server cannot send links by e-mail: its operator has not set BASTION_PUBLIC_URL "
                 "(the address users reach it at). Ask them to set it.")


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str


class Mailer:
    def __init__(self, smtp_url: str | None, sender: str, *, public_url: str | None = None) -> None:
        self.smtp_url = smtp_url
        self.sender = sender
        self.public_url = public_url.rstrip("/") if public_url else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-mail")

    def link(self, path: str) -> str:
        """The absolute URL of `path` (starting with '/') for a mail; refused without a public URL."""
        if self.public_url is None:
            log.error("refused to build a link for an e-mail (%s): BASTION_PUBLIC_URL is not set",
                      path.partition("?")[0])
            raise MailLinksUnavailable(NO_PUBLIC_URL)
        return f"{self.public_url}{path}"

    def queue(self, session: Session, message: Message) -> None:
        """Send `message` once `session` commits; drop it if the transaction rolls back."""
        outbox: list[Message] | None = session.info.get("bastion_outbox")
        if outbox is None:
            outbox = session.info["bastion_outbox"] = []

            @event.listens_for(session, "after_commit")
            def _flush(sess: Session) -> None:
                for msg in sess.info.pop("bastion_outbox", []):
                    self.send_later(msg)

            @event.listens_for(session, "after_rollback")
            def _drop(sess: Session) -> None:
                sess.info.pop("bastion_outbox", None)
        outbox.append(message)

    def send_later(self, message: Message) -> Future[None]:
        return self._pool.submit(self._send_logged, message)

    def _send_logged(self, message: Message) -> None:
        try:
            self.send_now(message)
        except (OSError, smtplib.SMTPException):
            log.exception("could not send mail %r to %s", message.subject, message.to)

    def send_now(self, message: Message) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = message.to
        msg["Subject"] = message.subject
        msg["Message-ID"] = make_msgid(domain="bastion")
        msg.set_content(message.body)
        if not self.smtp_url:
            log.warning("BASTION_SMTP_URL is not set; mail to %s not sent: %s", message.to, message.subject)
            return
        url = urlsplit(self.smtp_url)
        host = url.hostname or "localhost"
        if url.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, url.port or 465, timeout=30,
                                                    context=ssl.create_default_context())
        elif url.scheme in ("smtp", "smtp+starttls"):
            client = smtplib.SMTP(host, url.port or 25, timeout=30)
        else:
            raise ValueError(f"unsupported SMTP URL scheme {url.scheme!r}")
        with client:
            if url.scheme == "smtp+starttls":
                client.starttls(context=ssl.create_default_context())
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(msg)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
