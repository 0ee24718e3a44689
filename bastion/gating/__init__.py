"""Gated repositories: access requests (ask, review, grant), the gate's facts for the policy, and mail."""
