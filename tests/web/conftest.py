"""Browser tests use the SMTP sink and the mail-sending server of the accounts tests."""

from tests.accounts.fixtures import mail_sink, web_server  # noqa: F401
