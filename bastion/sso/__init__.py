"""Single sign-on: per-organization OpenID Connect (authlib, joserfc) on top of the normal sign-in.

An org's SSO session (sso_sessions) is a fact the policy reads: while the org enforces SSO, every right
that comes from membership needs a live one (orgs.service.sso_gate, filled by bastion.sso.service).
"""
