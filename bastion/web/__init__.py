"""The web UI: server-rendered HTML pages (Jinja2), one layout, CSS, and JavaScript only for WebAuthn.

Every page passes the same authz check as the API; browsers authenticate with a web session cookie.
"""
