"""Accounts tests share the SMTP sink and the mail-sending server with the web tests."""

from tests.accounts.fixtures import mail_sink, web_server  # noqa: F401
