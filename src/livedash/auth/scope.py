"""What a principal may see.

- `super_admin` sees every department and the hospital-wide totals.
- `admin` and `viewer` see only the departments their token names (and that exist); the
  hospital-wide totals are not theirs to see, since they sum other departments' data.
"""

from __future__ import annotations

from collections.abc import Iterable

from livedash.auth.tokens import Principal
from livedash.store.models import Role


def visible_departments(principal: Principal, known: Iterable[str]) -> set[str | None]:
    """Department codes `principal` may see; `None` stands for the hospital-wide totals."""
    known_codes = set(known)
    if principal.role is Role.SUPER_ADMIN:
        return {None, *known_codes}
    return set(principal.departments & known_codes)
