"""Who may read and write what in beds-svc, on top of the scope checks.

The routes take :data:`Reader` (``beds:read``) or :data:`Writer` (``beds:write``), and
their routers ``responses=AUTH_RESPONSES`` (``ght_shared.auth``). The fine rules (an
establishment's principals write their own establishment's data only, with
``ensure_establishment``; territorial principals all of them) are functions here, called
by the use cases; lists filter their rows with :func:`ght_shared.auth.readable_by`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from ght_shared.auth import Principal, require_scope

READ = "beds:read"
WRITE = "beds:write"

Reader = Annotated[Principal, Depends(require_scope(READ))]
Writer = Annotated[Principal, Depends(require_scope(WRITE))]
