"""The ``auth:`` section of the site file: sign-in sessions, the login rate limit, secrets from the environment.

Secrets are never in the file: it names the environment variables that hold them
(in Kubernetes, from a Secret). Without a JWT signing key a random one is made per
process (sessions end when the API restarts, and several API replicas need the
variable set).

Example:
    >>> AuthConfig().session_ttl_s, role_rank("manager") > role_rank("viewer")
    (900, True)
    >>> AuthConfig(session_ttl_s=10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for AuthConfig
    session_ttl_s
    ...
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from storelens.config.base import Strict

Role = Literal["viewer", "manager", "admin"]
#: Roles from least to most privileged: a role may do everything the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "manager", "admin")


def role_rank(role: str) -> int:
    """The rank of ``role`` in :data:`ROLES` (higher may do more); ``ValueError`` for an unknown role."""
    return ROLES.index(role)  # type: ignore[arg-type]


class AuthConfig(Strict):
    #: Lifetime of a sign-in session (the JWT; the dashboard's cookie is renewed while in use).
    session_ttl_s: Annotated[int, Field(ge=60, le=86_400)] = 900
    #: Longest a sign-in lasts through the cookie's renewals (then the user signs in again), from the sign-in.
    session_max_s: Annotated[int, Field(ge=60, le=31 * 86_400)] = 7 * 86_400
    #: Environment variable holding the JWT signing key (HS256; at least 32 bytes).
    jwt_secret_env: str = "STORELENS_JWT_SECRET"
    #: Environment variable holding the bearer token that may read ``/metrics`` (Prometheus).
    metrics_token_env: str = "STORELENS_METRICS_TOKEN"
    #: Environment variables of the first admin, created when the API starts with no users.
    admin_username_env: str = "STORELENS_ADMIN_USERNAME"
    admin_password_env: str = "STORELENS_ADMIN_PASSWORD"
    #: Sign-in attempts per minute per client address (an IPv6 address counts by its /64), and failed ones per
    #: minute per user name and client address.
    login_attempts_per_minute: Annotated[int, Field(ge=1)] = 20
    login_failures_per_minute: Annotated[int, Field(ge=1)] = 5
    #: Failed sign-ins per minute per user name across all clients (many addresses, a botnet); over it only
    #: clients that signed in as that user in the last 30 days may try (the others get 429).
    login_account_failures_per_minute: Annotated[int, Field(ge=1)] = 50
    #: Password checks (Argon2id, 64 MiB of memory each) one API process runs at once, plus one that only a client
    #: which signed in as the user lately takes (many addresses' guesses cannot keep the real user out); a sign-in
    #: waits up to ``password_check_wait_s`` for one, else answers 429 (``Retry-After: 1``): a burst of sign-ins
    #: cannot take the process out of memory (3 x 64 MiB at most; the pod's limit is 512 MiB).
    max_concurrent_password_checks: Annotated[int, Field(ge=1, le=64)] = 2
    password_check_wait_s: Annotated[float, Field(ge=0, le=30)] = 1.0
    #: Send the session cookie over HTTPS only (set when the API is behind TLS, e.g. the Ingress).
    cookie_secure: bool = False
    #: Shortest accepted password.
    min_password_length: Annotated[int, Field(ge=8)] = 10
