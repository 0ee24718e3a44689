"""Git over smart HTTP (upload-pack / receive-pack) and the receive hooks that route every push
through Bastion's checks, compare-and-swap ref updates, audit trail and post-commit hooks.
"""
