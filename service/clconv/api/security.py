"""Optional API keys: with ``CLCONV_API_KEYS`` set, every route except health, readiness,
metrics and the playground page needs ``Authorization: Bearer <key>``.

Keys are compared with ``hmac.compare_digest`` against every configured key, so the time taken
does not depend on how much of a key matched. No key is ever logged.
"""

from __future__ import annotations

import hmac

from clconv.errors import ForbiddenError, UnauthorizedError

OPEN_PATHS = frozenset(
    ("/", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")
)
OPEN_PREFIXES = ("/playground/",)
BEARER = "bearer"


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def check_api_key(authorization: str | None, keys: tuple[str, ...]) -> None:
    """Raise 401 when no Bearer key is sent and 403 when the key is not one of ``keys``."""
    if authorization is None or not authorization.strip():
        raise UnauthorizedError(
            "this server requires an API key; send the header Authorization: Bearer <key>",
            "Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token:
        raise UnauthorizedError(
            f"the Authorization header uses the scheme {scheme!r}; send Authorization: Bearer "
            "<key>",
            "Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    sent = token.encode()
    matched = False
    for key in keys:
        # Every key is compared, so the time taken does not reveal which one matched.
        matched |= hmac.compare_digest(sent, key.encode())
    if not matched:
        raise ForbiddenError(
            "the API key sent is not valid for this server; check the key", "Authorization"
        )
