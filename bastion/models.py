"""The model registry: imports every feature's tables so `Base.metadata` knows them all.

Alembic's environment and the schema test read `metadata` from here. It sits at the top of the
layers (it imports every feature); `bastion.db` below it imports no feature.
"""

from __future__ import annotations

import bastion.accounts.models  # noqa: F401
import bastion.audit.models  # noqa: F401
import bastion.community.models  # noqa: F401
import bastion.gating.models  # noqa: F401
import bastion.lfs.models  # noqa: F401
import bastion.lifecycle.models  # noqa: F401
import bastion.orgs.models  # noqa: F401
import bastion.relocation.models  # noqa: F401
import bastion.repos.models  # noqa: F401
import bastion.scanning.models  # noqa: F401
import bastion.scim.models  # noqa: F401
import bastion.signing.models  # noqa: F401
import bastion.sso.models  # noqa: F401
import bastion.tokens.models  # noqa: F401
import bastion.xet.models  # noqa: F401
from bastion.db import Base

metadata = Base.metadata
