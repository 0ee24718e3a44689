"""Where the features above a layer plug into the hooks and ports the lower ones own.

A lower feature never imports a higher one (.importlinter); where it needs one, it owns a hook list
or a port and the higher feature registers itself when imported. `load()` imports every such
provider, so no process runs with a port empty: the app factory, the scan worker, the CLI commands
that read repos' content (storage GC, fsck, rescans) and the test suite call it; the account, token
and org commands need no port and skip its ~2 s of imports. A port asked before it is filled raises
(never answers as if the feature did not exist): a gated repo is never judged open, an LFS object
never "stored nowhere".

Hooks and ports (owner ← provider):
- repos.commit.post_commit_hooks ← scanning.enqueue (scan what a commit adds), signing.service
  (verify signatures; installed with the instance key by signing.service.install)
- repos.objects (a commit's LFS pointers, LFS downloads) ← lfs.content
- lfs.content.object_stores (objects stored only as Xet chunks) ← xet.content
- repos.service.gate_facts (a gated repo's gate, for the policy) ← gating.service
- repos.commit.pull_request_opened / pull_request_facts (the pull request a create_pr commit opens; who
  owns refs/pr/N) ← community.service
- repos.downloads.lfs_download_headers, repos.browse.xet_hash_lookup ← xet.routes.install (app only)
- repos.annotations (scan statuses, commit signatures in API answers) ← scanning.verdicts, signing.service
- repos.service.signed_commits_required is repos' own (signing.service.rule_applies is it)
- orgs.service.org_delete_checks / group_delete_checks / group_detail_parts ← repos.service
- accounts.service.verified_emails_changed_hooks ← signing.service
- audit.worker.org_periods (each org's audit retention) ← orgs.service
- audit.checkpoints (the instance key that signs checkpoints) ← signing.service.install
- scanning.queue.queue_extensions / sweep_hooks (durable jobs on the scan workers) ← relocation.queue
- orgs.service.sso_gate (whether an org enforces SSO, its members' live SSO sessions) ← sso.service
- repos.service.delete_hooks (a region move of the deleted repository) ← relocation.service
- scanning.leaks.other_credentials (leaked SCIM tokens revoked on sight) ← scim.service
- scanning.queue.sweep_hooks (repos of deleted accounts, after the grace period) ← lifecycle.sweeper
"""

from __future__ import annotations

import importlib

PROVIDERS = (
    "bastion.orgs.service",
    "bastion.repos.service",
    "bastion.lfs.content",
    "bastion.xet.content",
    "bastion.gating.service",
    "bastion.community.service",
    "bastion.signing.service",
    "bastion.scanning.enqueue",
    "bastion.scanning.verdicts",
    "bastion.relocation.queue",
    "bastion.sso.service",
    "bastion.scim.service",
    "bastion.lifecycle.sweeper",
)


def load() -> None:
    for name in PROVIDERS:
        importlib.import_module(name)
