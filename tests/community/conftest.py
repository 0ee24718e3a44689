from tests.accounts.fixtures import mail_sink, web_server  # noqa: F401
