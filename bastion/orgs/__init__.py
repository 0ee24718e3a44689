"""Organizations: members and roles, invitations, resource groups, security settings, token governance.

models → service → routes (JSON, the Hub's APIs) / views (web pages); decisions live in bastion.authz.
"""
