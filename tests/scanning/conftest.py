from tests.accounts.fixtures import mail_sink  # noqa: F401
