"""Sign-in and roles: password hashes, session tokens, API keys, the guard of every route, the audit log.

* **Users** sign in with the OAuth2 password flow (``POST /v1/auth/login``) and get a short-lived
  JWT (HS256, ``auth.session_ttl_s``), returned in the body and as an HttpOnly cookie for the
  dashboard. Passwords are stored as Argon2id hashes (pwdlib, the maintained successor of passlib).
* **API keys** (machine clients: POS integrations, exporters) are ``slk_<key_id>.<secret>``; only
  a SHA-256 of the random secret is stored, the key carries one role and can be revoked.
* **Roles** ``viewer`` < ``manager`` < ``admin`` (:data:`storelens.config.auth.ROLES`). Each router
  declares the least role of its routes (:func:`storelens.api.deps.api_router`); a route may ask
  more with ``dependencies=[require_role("admin")]``. The user's current role and state are read
  from the database (cached :data:`PRINCIPAL_CACHE_S`), so a demoted or deleted user loses access
  within seconds, not at the token's expiry. Signing out (``POST /v1/auth/logout``) and a password
  reset void every session the user had: a token carries the user's session epoch of its sign-in
  (``users.session_epoch``, renewals keep it), and both move the epoch on; a user's epoch starts at its
  creation time, so a deleted user's session never works for a new user of the same name. The cookie's
  renewals end ``auth.session_max_s`` after the sign-in.
* **Audit**: :class:`AuditMiddleware` appends every write (``POST``/``PUT``/``PATCH``/``DELETE``
  under ``/v1/``) with who, what path, and the answer's status; the login route adds failed sign-ins.
* **Writes from other pages**: the cookie is ``SameSite=Strict``, so a page of another site cannot send it; a page
  of the same site (another port or subdomain of the host) can. A write under ``/v1/`` that the browser marks
  ``Sec-Fetch-Site: same-site`` or ``cross-site`` and that carries no ``Authorization: Bearer`` credential is
  refused (403, ``storelens_errors_total{reason="cross_site_write"}``: :class:`SameOriginWritesMiddleware`): such a
  page cannot sign the user out, acknowledge or resolve alerts, or sign the browser in as someone else. Browsers
  send that header only over HTTPS (or to localhost): serve the API over TLS with ``auth.cookie_secure``.
* **Login rate limit**: a moving window of attempts per client address (across user names) and of failures
  per user name and client address (the ``limits`` library; in memory, or in Redis when ``live.redis_url`` is
  set so every API replica shares it). The failures count per (user, client): someone guessing the admin's
  password from one address cannot lock the real admin out from another. A client is an IPv4 address or an
  IPv6 /64 (:func:`client_key`). A ceiling per user name across clients (``auth.login_account_failures_per_minute``)
  holds attackers with many addresses; over it, only clients that signed in as that user within
  :data:`KNOWN_CLIENT_DAYS` may still try. When Redis fails, the limits fall back to this process's memory
  (a warning, ``storelens_rate_limit_fallbacks_total``), never a 500, and no check asks Redis again until a ping
  in the background answers (:data:`LIMITER_FIRST_RETRY_S` after the failure, then up to :data:`LIMITER_RETRY_S`
  apart): a hanging Redis costs one timeout, not one per check, and the limits are shared again within seconds of
  its recovery. An attempt reserves its failure in both limits before its password is checked (concurrent attempts
  cannot all pass a look at the counters); a successful sign-in gives its reservation back.
* **Password checks** (Argon2id, 64 MiB each) run at most ``auth.max_concurrent_password_checks`` at a time per
  process, plus :data:`KNOWN_CLIENT_CHECK_SLOTS` that only a client known for the user (it signed in as that user
  within :data:`KNOWN_CLIENT_DAYS`) may take: a botnet keeping the shared checks busy cannot stop the real admin
  from a usual address. A sign-in that gets none within ``auth.password_check_wait_s`` (or whose client already has
  :data:`PASSWORD_CHECK_WAITERS_PER_CLIENT` sign-ins waiting) answers 429 (``Retry-After: 1``,
  ``storelens_errors_total{reason="password_checks_busy"}``): a burst of sign-ins cannot take the process out of
  memory.

Example:
    >>> from storelens.config.auth import AuthConfig
    >>> from storelens.storage import SqliteStorage
    >>> auth = Authenticator(AuthConfig(), SqliteStorage(":memory:"))
    >>> auth.create_user("ana", "correct horse battery", "manager")
    True
    >>> principal = auth.login("ana", "correct horse battery", client="127.0.0.1")
    >>> principal.role, auth.authenticate(auth.issue(principal)[0]).name
    ('manager', 'ana')
    >>> auth.login("ana", "wrong password!", client="127.0.0.1") is None
    True
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

import anyio
import jwt
from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from limits import RateLimitItem, RateLimitItemPerDay
from limits import parse as parse_limit
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from pwdlib import PasswordHash
from starlette.types import ASGIApp, Receive, Scope, Send

from storelens.config.auth import ROLES, AuthConfig, Role, role_rank
from storelens.errors import ConfigError
from storelens.runtime.policy import Breaker
from storelens.storage import auth as store

from .metrics import Metrics, StatusRecorder

log = logging.getLogger(__name__)

COOKIE_NAME = "storelens_session"
API_KEY_PREFIX = "slk_"
#: The audit log's actor and target of a failed sign-in under a name no user has (what was typed is not kept).
UNKNOWN_USER = "(unknown user)"
#: How long a resolved principal (user role and state, API key) is trusted before the database is read again.
PRINCIPAL_CACHE_S = 5.0
#: Anonymous writes (answered 401) audited per client address and minute; more are logged, not stored.
ANONYMOUS_AUDIT_PER_MINUTE = 30
#: Seconds a shared rate-limit store (Redis) may take to connect or answer before the in-memory fallback answers.
LIMITER_TIMEOUT_S = 2.0
#: Seconds after a failure of the shared rate-limit store before a ping in the background asks it again, doubling
#: after each failed ping up to :data:`LIMITER_RETRY_S`; the checks use memory until one answers.
LIMITER_FIRST_RETRY_S = 1.0
LIMITER_RETRY_S = 5.0
#: Days a client (:func:`client_key`) that signed in as a user stays exempt from that user's ceiling of failures.
KNOWN_CLIENT_DAYS = 30
#: Password checks of a process, beyond ``auth.max_concurrent_password_checks``, that only a client known for the
#: user (:data:`KNOWN_CLIENT_DAYS`) takes: guesses from many addresses cannot keep the real user from signing in.
KNOWN_CLIENT_CHECK_SLOTS = 1
#: Sign-ins of one client (:func:`client_key`) that may wait for a password check at once; more answer busy (429).
PASSWORD_CHECK_WAITERS_PER_CLIENT = 2
#: Most principals (users, API keys, unknown key ids) the cache keeps (the least recently used go first).
PRINCIPAL_CACHE_MAX = 10_000
#: The public part of an API key (``secrets.token_hex(6)``); any other key id is refused without a lookup.
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
#: Usernames: short, no spaces (they appear in the audit log).
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_ALGORITHM = "HS256"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in user, an API key (``name`` is ``key:<key_id>``) or the metrics scraper."""

    name: str
    role: Role
    kind: Literal["user", "api_key", "metrics"] = "user"

    def may(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


class RateLimited(Exception):
    """Too many sign-in attempts; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: int, message: str = "too many sign-in attempts") -> None:
        super().__init__(f"{message}; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class PasswordChecksBusy(RateLimited):
    """Every password check of this process is taken (``auth.max_concurrent_password_checks``); retry soon."""

    def __init__(self) -> None:
        super().__init__(1, "the server is busy checking other sign-ins")


class PasswordCheckSlots:
    """The password checks (Argon2id, 64 MiB each) one process runs at once: ``shared`` for every sign-in and
    ``reserved`` that only a client known for the user takes; at most ``waiters_per_client`` sign-ins of one client
    wait for one. As a context manager (creating a user's hash): a shared slot, waiting as long as it takes.

    Example:
        >>> slots = PasswordCheckSlots(1, reserved=1)
        >>> slots.acquire(0, "a"), slots.acquire(0, "b"), slots.acquire(0, "c", known=lambda: True)
        ('shared', None, 'reserved')
        >>> slots.release("shared"); slots.acquire(0, "b")
        'shared'
    """

    def __init__(self, shared: int, reserved: int = KNOWN_CLIENT_CHECK_SLOTS,
                 waiters_per_client: int = PASSWORD_CHECK_WAITERS_PER_CLIENT) -> None:
        self._cond = threading.Condition()
        self._free = {"shared": shared, "reserved": reserved}
        self._size = dict(self._free)
        self._waiting: dict[str, int] = {}
        self.waiters_per_client = waiters_per_client

    def _take(self, known: bool) -> str | None:
        for kind in ("shared", "reserved") if known else ("shared",):
            if self._free[kind] > 0:
                self._free[kind] -= 1
                return kind
        return None

    def acquire(self, timeout_s: float | None, client: str | None = None, known: Callable[[], bool] | None = None
                ) -> str | None:
        """The slot taken (``"shared"`` or ``"reserved"``; give it back with :meth:`release`), ``None`` when none
        was free within ``timeout_s`` (``None``: no limit) or ``client`` has ``waiters_per_client`` waiting already.
        ``known()`` (whether the client is known for the user: it may ask the shared rate-limit store) is asked
        only when no shared slot is free at once."""
        with self._cond:
            kind = self._take(False)
        if kind is not None:
            return kind
        is_known = known() if known is not None else False
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            if client is not None and self._waiting.get(client, 0) >= self.waiters_per_client:
                return self._take(is_known)
            if client is not None:
                self._waiting[client] = self._waiting.get(client, 0) + 1
            try:
                while (kind := self._take(is_known)) is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(left)
                return kind
            finally:
                if client is not None:
                    self._waiting[client] -= 1
                    if not self._waiting[client]:
                        del self._waiting[client]

    def release(self, kind: str) -> None:
        with self._cond:
            if self._free[kind] >= self._size[kind]:
                raise ValueError(f"PasswordCheckSlots: a {kind} slot released more often than taken")
            self._free[kind] += 1
            self._cond.notify_all()

    def __enter__(self) -> "PasswordCheckSlots":
        self.acquire(None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release("shared")


def client_key(client: str) -> str:
    """The client a rate limit counts ``client`` (an address) as: an IPv6 address by its /64 (one subscriber's
    network: an attacker there has billions of addresses), an IPv4 address (also IPv4-mapped) as is, anything
    else unchanged.

    >>> client_key("2001:db8:1:2:a:b:c:d"), client_key("::ffff:203.0.113.5"), client_key("203.0.113.5")
    ('2001:db8:1:2::/64', '203.0.113.5', '203.0.113.5')
    """
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_new_user(cfg: AuthConfig, username: str, password: str, role: str) -> None:
    """:class:`ValueError` naming what is wrong with a user's name, role or password (:meth:`Authenticator.
    create_user`; the CLI checks them before it creates a store)."""
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise ValueError(f"username {username!r}: 1-64 letters, digits and . _ @ - (not first)")
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < cfg.min_password_length:
        raise ValueError(f"password: at least {cfg.min_password_length} characters")


class Authenticator:
    """Sign-in, tokens and keys of one API app over the history store ``storage``."""

    def __init__(self, cfg: AuthConfig, storage: Any, redis_url: str | None = None,
                 metrics: Metrics | None = None, *, sessions: bool = True) -> None:
        """``sessions=False``: for a client that manages users and keys but never signs a session (the CLI's
        ``storelens users``): no warning about a missing ``auth.jwt_secret_env`` key."""
        self.cfg = cfg
        self.metrics = metrics
        self.storage = storage
        self.hasher = PasswordHash.recommended()
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))  # equal time for unknown users
        secret = os.environ.get(cfg.jwt_secret_env, "")
        if secret and len(secret.encode()) < 32:
            raise ValueError(f"auth.jwt_secret_env: ${cfg.jwt_secret_env} must hold at least 32 bytes")
        if not secret and sessions:
            log.warning("no JWT signing key in $%s: using a random one (sessions end when the API restarts; "
                        "set it when several API replicas serve the store)", cfg.jwt_secret_env)
        secret = secret or secrets.token_urlsafe(48)
        self._secret = secret
        self.metrics_token = os.environ.get(cfg.metrics_token_env) or None
        # Redis errors raise StorageError (wrap_exceptions): _limit() then asks the per-process fallback
        shared = storage_from_string(redis_url, wrap_exceptions=True, socket_timeout=LIMITER_TIMEOUT_S,
                                     socket_connect_timeout=LIMITER_TIMEOUT_S) if redis_url else None
        self._fallback = MovingWindowRateLimiter(storage_from_string("memory://"))
        self._limiter = MovingWindowRateLimiter(shared) if shared is not None else self._fallback
        # after a failure the shared store is skipped until a ping in the background (its check()) answers
        self._limiter_breaker = Breaker(LIMITER_RETRY_S, first_retry_s=min(LIMITER_FIRST_RETRY_S, LIMITER_RETRY_S),
                                        probe=shared.check if shared is not None else None,
                                        name="rate-limit store (Redis)",
                                        count_error=metrics.count_error if metrics is not None else None)
        self._attempts = parse_limit(f"{cfg.login_attempts_per_minute}/minute")
        self._failures = parse_limit(f"{cfg.login_failures_per_minute}/minute")
        self._account_failures = parse_limit(f"{cfg.login_account_failures_per_minute}/minute")
        self._signed_in = RateLimitItemPerDay(1, KNOWN_CLIENT_DAYS)  # full: signed in from there lately
        self._anonymous_writes = parse_limit(f"{ANONYMOUS_AUDIT_PER_MINUTE}/minute")
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._key_hashes: dict[str, str] = {}  # key_id -> SHA-256 of its secret, filled with the cache
        self._epochs: dict[str, int] = {}  # username -> users.session_epoch, filled with the cache and at sign-in
        self._lock = threading.Lock()
        #: the Argon2 checks running at once (64 MiB each): login() waits password_check_wait_s for one
        self._password_checks = PasswordCheckSlots(cfg.max_concurrent_password_checks)
        self._busy_logged = float("-inf")  # time.monotonic() of the last warning about busy password checks

    # -- users ------------------------------------------------------------------------------------

    def create_user(self, username: str, password: str, role: str, *, reset: bool = True) -> bool:
        """Create (``True``) or reset (``False``) ``username`` with ``password`` and ``role`` (a reset ends its
        sessions; ``reset=False``: an existing user is left as it is)."""
        check_new_user(self.cfg, username, password, role)
        with self._password_checks:  # hashing takes the memory of a check
            password_hash = self.hasher.hash(password)
        created = store.put_user(self.storage, username, password_hash, role, _now_ms(), create_only=not reset)
        self._forget(f"user:{username}")
        return created

    def delete_user(self, username: str, actor: str = "system", client: str = "") -> bool:
        """Delete ``username`` (``False``: no such user) and first revoke every API key it created (audited, by
        ``actor``): a deleted admin keeps no access through its keys."""
        if store.get_user(self.storage, username) is None:
            return False
        self.revoke_keys_of(username, None, actor, client)
        done = store.delete_user(self.storage, username)
        self._forget(f"user:{username}")
        return done

    def revoke_keys_of(self, username: str, role: str | None, actor: str, client: str = "",
                       reason: str | None = None) -> list[str]:
        """Revoke the API keys ``username`` created whose role is above ``role`` (``None``: all), and so on the keys
        those keys created (``created_by`` ``key:<id>``, transitively), each audited as ``api-keys.revoke`` by
        ``actor`` (with ``reason``, by default the creator deleted or demoted); their ids. A deleted or demoted
        user's keys keep no more than it may; a revoked key's (``username`` ``key:<id>``) none: a leaked key cannot
        leave keys it made behind it."""
        revoked: list[str] = []
        seen: set[str] = set()
        creators = [username]
        while creators:
            creator = creators.pop()
            for key in store.list_api_keys(self.storage, created_by=creator):
                if key["key_id"] in seen:
                    continue
                seen.add(key["key_id"])
                creators.append(f"key:{key['key_id']}")  # the keys it created, even when it is already revoked
                if key["revoked_ts_ms"] is None and (role is None or role_rank(key["role"]) > role_rank(role)) \
                        and self.revoke_api_key(key["key_id"]):
                    revoked.append(key["key_id"])
                    store.audit(self.storage, _now_ms(), actor, "api-keys.revoke", key["key_id"],
                                {"role": key["role"], "name": key["name"], "created_by": creator,
                                 "reason": reason or ("creator deleted" if role is None else f"creator now {role}"),
                                 **({} if creator == username else {"user": username})}, client)
        return revoked

    def bootstrap_admin(self) -> str | None:
        """Create the first admin from the environment when there is no user yet; its name, else ``None``."""
        name = os.environ.get(self.cfg.admin_username_env) or "admin"
        password = os.environ.get(self.cfg.admin_password_env)
        if not password or store.count_users(self.storage):
            return None
        try:
            check_new_user(self.cfg, name, password, "admin")
        except ValueError as exc:  # not a crash loop with "password: at least 10 characters" and no variable
            env = self.cfg.admin_password_env if str(exc).startswith("password") else self.cfg.admin_username_env
            raise ConfigError(f"${env} (the first admin): {exc}") from None
        # several API workers start at once: only one creates the admin, none resets it (and its sessions)
        if not self.create_user(name, password, "admin", reset=False):
            return None
        store.audit(self.storage, _now_ms(), "system", "users.create-admin", name, {"source": "environment"})
        log.info("created the first admin %r from $%s", name, self.cfg.admin_password_env)
        return name

    def login(self, username: str, password: str, client: str) -> Principal | None:
        """The user for ``username``/``password``; ``None`` when wrong (logged to the audit log; a name no user
        has as :data:`UNKNOWN_USER`).

        Raises :class:`RateLimited` when the client or the user name made too many attempts.
        """
        name, key = self.limit_name(username), client_key(client)
        if not self._limit("hit", self._attempts, "login-client", key):
            raise RateLimited(60)
        # Each attempt reserves its failure before the password check (given back on success, to the store that took
        # it: Redis may fail or recover meanwhile): concurrent attempts cannot all pass a look at the counters.
        # Failures count per (user, client): another client with the right password is not locked out
        reserved_in, held = self._reserve(self._failures, "login-user", name, key)
        if not reserved_in:
            raise RateLimited(60)
        # and per user across clients (many addresses): over it, only clients the user signed in from lately try.
        # Not while the shared store is down: this process's memory does not know the known clients (the real
        # admin would be held with the attackers); the per-(user, client) limit still holds each address.
        shared_down = self._limiter is not self._fallback and self._limiter_breaker.down
        in_account, account_held = (False, None) if shared_down else self._reserve(
            self._account_failures, "login-account", name)

        def known() -> bool:  # signed in as the user from this client lately
            return not self._limit("test", self._signed_in, "login-known", name, key)

        if not shared_down and not in_account and not known():
            self._give_back(held, self._failures, "login-user", name, key)  # refused: no password was checked
            raise RateLimited(60)

        def give_back() -> None:
            self._give_back(held, self._failures, "login-user", name, key)
            if in_account:
                self._give_back(account_held, self._account_failures, "login-account", name)

        try:
            user = store.get_user(self.storage, username)
            # at most auth.max_concurrent_password_checks Argon2 checks (64 MiB each) at once, and one more for a
            # client known for the user (a burst of guesses from many addresses cannot keep the real user out)
            slot = self._password_checks.acquire(self.cfg.password_check_wait_s, key, known)
            if slot is None:
                self._busy()
                raise PasswordChecksBusy()
            try:
                ok = self.hasher.verify(password, user["password_hash"] if user else self._dummy_hash)
            finally:
                self._password_checks.release(slot)
        except Exception:  # no password was checked (busy, the database failed): the attempt is no failure
            give_back()
            raise
        if not ok or user is None or user["disabled"]:
            # a name no user has is not written down (a password typed in the name field would land in the log)
            who = username if user is not None else UNKNOWN_USER
            store.audit(self.storage, _now_ms(), who, "auth.login-failed", who, {}, client)
            return None
        give_back()
        # a known client for KNOWN_CLIENT_DAYS from this sign-in (cleared first: the window starts again)
        self._limit("clear", self._signed_in, "login-known", name, key)
        self._limit("hit", self._signed_in, "login-known", name, key)
        store.audit(self.storage, _now_ms(), username, "auth.login", username, {}, client)
        with self._lock:  # the epoch the session is signed in under (issue() puts it in the token)
            self._epochs[username] = int(user.get("session_epoch") or 0)
        return Principal(username, user["role"], "user")

    def _busy(self) -> None:
        """Count (and warn, at most once a minute) a sign-in refused for want of a free password check."""
        if self.metrics is not None:
            self.metrics.count_error("password_checks_busy")
        now = time.monotonic()
        with self._lock:
            warn = now - self._busy_logged >= 60.0
            if warn:
                self._busy_logged = now
        if warn:
            log.warning("sign-ins refused (429): all %d password checks of this process busy for %g s "
                        "(auth.max_concurrent_password_checks, auth.password_check_wait_s)",
                        self.cfg.max_concurrent_password_checks, self.cfg.password_check_wait_s)

    def limit_name(self, username: str) -> str:
        """``username`` as the sign-in limits key it (:meth:`login`): a keyed hash, so a password typed in the name
        field is not written to the shared store (Redis) in clear; lower-cased first, so the limits hold across
        the name's cases."""
        return hmac.new(self._secret.encode(), username.lower().encode(), hashlib.sha256).hexdigest()[:32]

    # -- tokens and keys ------------------------------------------------------------------------

    def issue(self, principal: Principal, signed_in_ms: int | None = None, epoch: int | None = None) -> tuple[str, int]:
        """A session JWT for a user: ``(token, expires_in_s)``. ``signed_in_ms`` and ``epoch``: when the session
        began and the user's session epoch then (a renewal keeps both: the token never outlives
        ``auth.session_max_s`` after the sign-in, nor a sign-out or password reset since)."""
        now_ms = _now_ms()
        if epoch is None:
            with self._lock:
                epoch = self._epochs.get(principal.name, 0)
        auth_ms = now_ms if signed_in_ms is None else signed_in_ms
        now = now_ms // 1000
        exp = min(now + self.cfg.session_ttl_s, auth_ms // 1000 + self.cfg.session_max_s)
        claims = {"sub": principal.name, "role": principal.role, "iat": now, "exp": exp, "typ": "session",
                  "iat_ms": now_ms, "auth_ms": auth_ms, "sep": epoch}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM), max(0, exp - now)

    def renew(self, token: str, principal: Principal) -> str | None:
        """A fresh session token for the dashboard's cookie once half its lifetime has passed (``None``: not yet,
        or the session reached ``auth.session_max_s`` since its sign-in)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM])
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "session" or time.time() - float(claims.get("iat", 0)) <= self.cfg.session_ttl_s / 2:
            return None
        token, ttl = self.issue(principal, int(claims.get("auth_ms", int(claims.get("iat", 0)) * 1000)),
                                int(claims.get("sep", 0)))
        return token if ttl > 0 else None

    def sign_out(self, credential: str) -> Principal | None:
        """Void every session of the user ``credential`` (a session token) belongs to; that user, or ``None``
        when it is no valid session (an API key is revoked through the admin routes instead)."""
        principal = self.authenticate(credential)
        if principal is None or principal.kind != "user":
            return None
        store.end_sessions(self.storage, principal.name)
        self._forget(f"user:{principal.name}")
        return principal

    def token_age_s(self, token: str) -> float | None:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM])
        except jwt.PyJWTError:
            return None
        return time.time() - float(claims.get("iat", 0))

    def create_api_key(self, name: str, role: str, created_by: str) -> tuple[str, str]:
        """A new key: ``(key_id, key)``; the key is shown once and only its secret's hash is stored."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        store.put_api_key(self.storage, key_id, name, _sha256(secret), role, created_by, _now_ms())
        return key_id, f"{API_KEY_PREFIX}{key_id}.{secret}"

    def revoke_api_key(self, key_id: str) -> bool:
        done = store.revoke_api_key(self.storage, key_id, _now_ms())
        self._forget(f"key:{key_id}")
        return done

    def authenticate(self, credential: str, *, past_exp: bool = False, cached_only: bool = False) -> Principal | None:
        """The principal of a session JWT or an API key; ``None`` when invalid, expired, revoked or disabled.
        ``past_exp``: a session token past its ``exp`` is still accepted while a renewal of it would be (its user's
        session epoch did not move, within ``auth.session_max_s`` of the sign-in): for an open live stream, whose
        token is not renewed with the cookie. ``cached_only``: never read the database (on the event loop: a slow
        or locked database would stall every request); ``None`` too when the user or key is not freshly cached."""
        if credential.startswith(API_KEY_PREFIX):
            key_id, _, secret = credential[len(API_KEY_PREFIX):].partition(".")
            if not _KEY_ID.match(key_id):
                return None
            principal = self._cached(f"key:{key_id}", lambda: self._key_principal(key_id), cached_only)
            row_hash = self._key_hashes.get(key_id) if principal else None
            if principal is None or row_hash is None or not hmac.compare_digest(row_hash, _sha256(secret)):
                return None
            return principal
        try:
            claims = jwt.decode(credential, self._secret, algorithms=[_ALGORITHM],
                                options={"require": ["exp", "sub"], "verify_exp": not past_exp})
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "session":
            return None
        username = str(claims["sub"])
        principal = self._cached(f"user:{username}", lambda: self._user_principal(username), cached_only)
        issued_ms = int(claims.get("iat_ms", int(claims.get("iat", 0)) * 1000))
        with self._lock:
            current = self._epochs.get(username, 0)
        if principal is None or int(claims.get("sep", 0)) < current:
            return None  # signed out or the password reset since this session's sign-in
        if _now_ms() - int(claims.get("auth_ms", issued_ms)) > self.cfg.session_max_s * 1000:
            return None
        return principal

    def audit_anonymous(self, client: str) -> bool:
        """Whether an anonymous write of ``client`` is still audited this minute (at most
        :data:`ANONYMOUS_AUDIT_PER_MINUTE`: a flood of unauthenticated requests cannot fill the audit log)."""
        return self._limit("hit", self._anonymous_writes, "audit-anonymous", client_key(client))

    def audit_refused(self, name: str) -> bool:
        """Whether a refused write (4xx) of the principal ``name`` is still audited this minute (at most
        :data:`ANONYMOUS_AUDIT_PER_MINUTE`, as anonymous writes: a viewer's key cannot fill the audit log)."""
        return self._limit("hit", self._anonymous_writes, "audit-refused", name)

    def _limit(self, op: Literal["hit", "test", "clear", "refund"], item: RateLimitItem, *identifiers: str) -> bool:
        """``hit``, ``test``, ``clear`` or ``refund`` (:func:`_refund`) a rate limit in the shared store; when it fails
        (Redis down or slow), in this process's memory instead: a warning once per outage and
        ``storelens_rate_limit_fallbacks_total``. After a failure the shared store is skipped until a ping in the
        background answers (see the module)."""
        return self._limit_in(op, item, *identifiers)[0]

    def _reserve(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, MovingWindowRateLimiter]:
        """``hit`` ``item`` (:meth:`_limit`): whether it was allowed, and the store that took it (for
        :meth:`_give_back`)."""
        return self._limit_in("hit", item, *identifiers)

    def _give_back(self, limiter: MovingWindowRateLimiter, item: RateLimitItem, *identifiers: str) -> None:
        """Give a :meth:`_reserve`'d hit back to the store that took it, never to the other one: a reservation made
        in memory while Redis failed is not taken from Redis's window once it answers again (nor the reverse). When
        the shared store fails (or is skipped) now, the reservation stays there (it leaves the window in a minute)."""
        if limiter is self._fallback:
            _refund(limiter, item, *identifiers)
            return
        if not self._limiter_breaker.allow():
            return
        try:
            _refund(limiter, item, *identifiers)
        except StorageError as exc:
            if self._limiter_breaker.failed():
                log.warning("rate-limit store unreachable (%s): limiting sign-ins in this process's memory until it "
                            "answers a ping", exc)
        else:
            if self._limiter_breaker.succeeded():
                log.warning("rate-limit store answers again: limits shared by the API replicas again")

    def _limit_in(self, op: Literal["hit", "test", "clear", "refund"], item: RateLimitItem, *identifiers: str
                  ) -> tuple[bool, MovingWindowRateLimiter]:
        """:meth:`_limit`'s answer and the store that gave it."""
        if self._limiter is not self._fallback:
            if self._limiter_breaker.allow():  # after a failure: memory until a ping in the background answers
                try:
                    allowed = _limiter_op(self._limiter, op)(item, *identifiers)
                except StorageError as exc:
                    if self._limiter_breaker.failed():
                        log.warning("rate-limit store unreachable (%s): limiting sign-ins in this process's memory "
                                    "until it answers a ping (the first %g s after, then up to %g s apart)", exc,
                                    self._limiter_breaker.first_retry_s, self._limiter_breaker.retry_s)
                else:
                    if self._limiter_breaker.succeeded():
                        log.warning("rate-limit store answers again: limits shared by the API replicas again")
                    return (bool(allowed) if op in ("hit", "test") else True), self._limiter
            if self.metrics is not None:
                self.metrics.rate_limit_fallbacks.inc()
        result = _limiter_op(self._fallback, op)(item, *identifiers)
        return (bool(result) if op in ("hit", "test") else True), self._fallback

    def metrics_allowed(self, token: str) -> bool:
        return self.metrics_token is not None and hmac.compare_digest(token.encode(), self.metrics_token.encode())

    # -- cache ------------------------------------------------------------------------------------

    def _user_principal(self, username: str) -> Principal | None:
        user = store.get_user(self.storage, username)
        if user is None or user["disabled"]:
            return None
        self._epochs[username] = int(user.get("session_epoch") or 0)
        return Principal(username, user["role"], "user")

    def _key_principal(self, key_id: str) -> Principal | None:
        key = store.get_api_key(self.storage, key_id)
        if key is None or key["revoked_ts_ms"] is not None:
            return None
        self._key_hashes[key_id] = key["secret_sha256"]
        if (key["last_used_ts_ms"] or 0) < _now_ms() - 60_000:
            store.touch_api_key(self.storage, key_id, _now_ms())
        return Principal(f"key:{key_id}", key["role"], "api_key")

    def _cached(self, key: str, load: Callable[[], Principal | None], cached_only: bool = False) -> Principal | None:
        """The cached principal of ``key`` while fresh, else ``load()``'s (``None`` without loading when
        ``cached_only``)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < PRINCIPAL_CACHE_S:
            return hit[1]
        if cached_only:
            return None
        principal = load()
        with self._lock:
            self._cache[key] = (now, principal)
            self._cache.move_to_end(key)
            while len(self._cache) > PRINCIPAL_CACHE_MAX:
                self._cache.popitem(last=False)
        return principal

    def _forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)


def _limiter_op(limiter: MovingWindowRateLimiter, op: str) -> Callable[..., Any]:
    if op == "refund":
        return lambda item, *identifiers: _refund(limiter, item, *identifiers)
    return getattr(limiter, op)


def _refund(limiter: MovingWindowRateLimiter, item: RateLimitItem, *identifiers: str) -> None:
    """Give back one entry of a moving-window ``hit`` (the newest): a reserved failure that was a success or
    whose password was not checked. The ``limits`` library has no public call for it; its memory and Redis stores
    (the two :class:`Authenticator` makes; ``limits`` is pinned) keep a window as a list, newest first."""
    storage, key = limiter.storage, item.key_for(*identifiers)
    if isinstance(storage, MemoryStorage):
        with storage.locks[key]:
            events = storage.events.get(key)
            if events:
                events.pop(0)
    elif isinstance(storage, RedisStorage):
        try:
            storage.get_connection().lpop(storage.prefixed_key(key))
        except Exception as exc:  # like the store's own calls (wrap_exceptions): the in-memory fallback answers
            raise StorageError(exc) from exc
    else:  # pragma: no cover - another store: the reservation stays (a success counts as a failure)
        log.debug("cannot give back a sign-in reservation in %s", type(storage).__name__)


# -- the guard of every route ---------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A session token from `POST /v1/auth/login` or an API key.")
_cookie = APIKeyCookie(name=COOKIE_NAME, auto_error=False, description="The dashboard's session cookie.")


def _unauthorized(detail: str = "not signed in") -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def credential_of(request: Request) -> str | None:
    """The caller's credential as the guard reads it: a bearer token or API key, else the dashboard's cookie."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value
    return request.cookies.get(COOKIE_NAME) or None


def set_session_cookie(response: Response, token: str, cfg: AuthConfig) -> None:
    response.set_cookie(COOKIE_NAME, token, max_age=cfg.session_ttl_s, httponly=True, samesite="strict",
                        secure=cfg.cookie_secure, path="/")


def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency that answers 401 without valid credentials and 403 below ``role``; else the principal.

    Credentials: ``Authorization: Bearer <session token or API key>``, or the dashboard's cookie
    (renewed once half its lifetime has passed, so an open dashboard stays signed in).
    """
    def guard(request: Request, response: Response,
              bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
              cookie: Annotated[str | None, Depends(_cookie)]) -> Principal:
        auth: Authenticator = request.app.state.context.auth
        credential = bearer.credentials if bearer is not None else cookie
        principal = auth.authenticate(credential) if credential else None
        if principal is None:
            raise _unauthorized("not signed in" if not credential else "invalid or expired credentials")
        request.state.principal = principal
        if not principal.may(role):
            raise HTTPException(403, f"needs the {role} role (you are {principal.role})")
        if bearer is None and cookie:
            renewed = auth.renew(cookie, principal)
            if renewed is not None:
                set_session_cookie(response, renewed, auth.cfg)
        return principal

    guard.role = role  # type: ignore[attr-defined]  # read by the role-matrix test and the route docs
    return guard


def require_metrics(request: Request,
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    cookie: Annotated[str | None, Depends(_cookie)]) -> Principal:
    """``/metrics``: the metrics token (``$STORELENS_METRICS_TOKEN``, for Prometheus) or an admin."""
    auth: Authenticator = request.app.state.context.auth
    if bearer is not None and auth.metrics_allowed(bearer.credentials):
        return Principal("metrics", "viewer", "metrics")
    return require_role("admin")(request, Response(), bearer, cookie)


require_metrics.role = "admin"  # type: ignore[attr-defined]

PrincipalDep = Annotated[Principal, Depends(require_role("viewer"))]


def _bearer_credential(authorization: bytes | None) -> bool:
    """Whether an ``Authorization`` header carries what ``_bearer`` (HTTPBearer) takes: ``Bearer <credential>``."""
    scheme, credential = get_authorization_scheme_param((authorization or b"").decode("latin-1"))
    return scheme.lower() == "bearer" and bool(credential)


class SameOriginWritesMiddleware:
    """Refuses (403) a write under ``/v1/`` sent by a page of another origin: ``Sec-Fetch-Site`` (set by the
    browser, no page can change it) ``same-site`` or ``cross-site``, and no ``Authorization: Bearer`` credential (a
    bearer token or API key is the caller's own, not a cookie the browser adds; another scheme is ignored by the
    credential check, which then takes the cookie, so it exempts nothing). The dashboard's own requests are
    ``same-origin``; clients other than browsers send no ``Sec-Fetch-Site``.

    Browsers send ``Sec-Fetch-*`` only to a potentially trustworthy origin (HTTPS, or localhost): over plain HTTP on
    another host name there is no header and nothing is refused. There the SameSite=Strict cookie alone keeps other
    sites' pages out, but not pages of another port or subdomain of the same host (same site): serve the API over
    TLS with ``auth.cookie_secure``. (No Origin-vs-Host check: a reverse proxy rewriting Host, or the dashboard's
    dev proxy, would be refused.)"""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in _WRITE_METHODS \
                and scope.get("path", "").startswith("/v1/"):
            headers = dict(scope.get("headers") or ())
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
            if site in ("same-site", "cross-site") and not _bearer_credential(headers.get(b"authorization")):
                log.warning("refused a %s write from another origin: %s %s", site, scope["method"], scope["path"])
                self.metrics.count_error("cross_site_write")
                body = b'{"detail":"refused: a write sent by a page of another origin (Sec-Fetch-Site: ' \
                    + site.encode() + b')"}'
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class AuditMiddleware:
    """Appends every write under ``/v1/`` to the audit log: who, method and path, status, client address."""

    def __init__(self, app: ASGIApp, storage: Any) -> None:
        self.app = app
        self.storage = storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WRITE_METHODS \
                or not scope.get("path", "").startswith("/v1/") or scope.get("path") == "/v1/auth/login":
            await self.app(scope, receive, send)
            return
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            principal = scope.get("state", {}).get("principal")
            actor = principal.name if principal is not None else "anonymous"
            action = f"{scope['method']} {getattr(scope.get('route'), 'path', '<unmatched>')}"
            detail = {"status": recorder.status}
            if scope.get("query_string"):
                detail["query"] = scope["query_string"].decode("latin-1")[:500]
            client = (scope.get("client") or ("", 0))[0]
            await self._write(scope, principal, actor, action, detail, client)

    async def _write(self, scope: Scope, principal: Principal | None, actor: str, action: str,
                     detail: dict[str, Any], client: str) -> None:
        ctx = getattr(getattr(scope.get("app"), "state", None), "context", None)
        # anonymous writes per client and a principal's refused ones (4xx) per principal: at most
        # ANONYMOUS_AUDIT_PER_MINUTE; off the event loop: the limiter may wait for Redis (LIMITER_TIMEOUT_S)
        capped = "anonymous" if principal is None else "refused" if 400 <= detail["status"] < 500 else None
        if capped is not None and ctx is not None and not await anyio.to_thread.run_sync(
                *((ctx.auth.audit_anonymous, client) if principal is None else (ctx.auth.audit_refused, actor))):
            log.info("%s write not audited (over %d a minute from %s): %s %s", capped, ANONYMOUS_AUDIT_PER_MINUTE,
                     client if principal is None else actor, action, scope["path"][:200])
            ctx.metrics.audit_dropped.labels(capped).inc()
            return
        try:
            # a NUL of the path (``%00``) as text: PostgreSQL stores none, and the row would be lost
            await anyio.to_thread.run_sync(store.audit, self.storage, _now_ms(), actor, action,
                                           scope["path"][:500].replace("\x00", "\\x00"), detail, client)
        except Exception:  # the answer is sent; a lost audit row is logged, never a second error
            log.exception("audit log write failed: %s %s by %s", action, scope["path"], actor)
