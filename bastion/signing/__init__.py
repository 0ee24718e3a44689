"""Commit signatures: users' GPG and SSH signing keys, verification of every commit that enters,
the instance's own signing key and the "require signed commits" rule.
"""
