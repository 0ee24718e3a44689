"""Accounts: users (and, later, passwords, web sessions and second factors)."""
