"""THE authorization policy: who (Principal) may do what (Permission) to which resource.

Routes call `require()` exactly once; the decision is `authorize()`, one pure function.
"""

from bastion.authz.permissions import Permission, permission
from bastion.authz.policy import (
    Decision,
    DiscussionRef,
    NamespaceRef,
    Principal,
    RepoRef,
    authorize,
    checks_in_request,
    readable_repos_clause,
    require,
    start_request_checks,
)

__all__ = [
    "Decision", "DiscussionRef", "NamespaceRef", "Permission", "Principal", "RepoRef", "authorize", "checks_in_request",
    "permission", "readable_repos_clause", "require", "start_request_checks",
]
