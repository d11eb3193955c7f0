"""Users, API keys and the audit log (admins only).

Users sign in at ``/v1/auth/login``; API keys are for machine clients (a till integration
posting transactions, an exporter) and carry one role. Every write through the API is in the
audit log (:class:`~storelens.api.security.AuditMiddleware`), with failed sign-ins; the changes of
users and keys also as entries naming the user or key and its role (``users.create``, ``users.reset``,
``users.delete``, ``api-keys.create``, ``api-keys.revoke``). Deleting a user revokes the keys it
created; lowering its role, those of a role above the new one.
"""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from storelens.config.auth import Role
from storelens.storage import auth as store

from ..deps import ContextDep, FromMs, Text, ToMs, api_router, check_range, require_role
from ..models import ErrorOut, _Out
from ..security import USERNAME_PATTERN, Principal

router = api_router("admin", role="admin")

Username = Annotated[str, Path(max_length=64, pattern=USERNAME_PATTERN, description="User name.")]
KeyId = Annotated[str, Path(max_length=32, pattern=r"^[0-9a-f]{1,32}$", description="The key's public id.")]
NOT_FOUND = {404: {"model": ErrorOut, "description": "Unknown user or key."}}
Admin = Annotated[Principal, Depends(require_role("admin"))]


def _audit(ctx: ContextDep, request: Request, principal: Principal, action: str, target: str,
           detail: dict[str, object]) -> None:
    """An audit entry naming what changed (the middleware's entry of the request has the path and status only);
    never a password or a key."""
    store.audit(ctx.storage, int(time.time() * 1000), principal.name, action, target, detail,
                request.client.host if request.client else "")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(max_length=64, pattern=USERNAME_PATTERN)]
    password: Annotated[Text, Field(min_length=1, max_length=1024)]
    role: Role


class UserOut(_Out):
    username: str
    role: Role
    created_ts_ms: int
    disabled: bool


class UsersOut(_Out):
    users: list[UserOut]


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, Field(min_length=1, max_length=200, description="What the key is for (e.g. 'till 3').")]
    role: Role


class ApiKeyOut(_Out):
    key_id: str
    name: str
    role: Role
    created_by: str
    created_ts_ms: int
    revoked_ts_ms: int | None
    last_used_ts_ms: int | None


class NewApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself, shown once: send as `Authorization: Bearer <key>`.")


class ApiKeysOut(_Out):
    keys: list[ApiKeyOut]


class AuditEntryOut(_Out):
    id: int
    ts_ms: int
    actor: str
    action: str
    target: str
    detail: dict[str, object]
    client: str


class AuditOut(_Out):
    total: int
    offset: int
    limit: int
    entries: list[AuditEntryOut]



@router.get("/v1/users", response_model=UsersOut, summary="Users (admin)")
def users(ctx: ContextDep) -> UsersOut:
    return UsersOut(users=[UserOut(**u) for u in store.list_users(ctx.storage)])


@router.post("/v1/users", response_model=UserOut, summary="Create a user or reset one (admin)",
                   description="Creates the user, or sets a new password and role for an existing one.")
def put_user(ctx: ContextDep, body: UserIn, principal: Admin, request: Request) -> UserOut:
    before = store.get_user(ctx.storage, body.username)
    try:
        created = ctx.auth.create_user(body.username, body.password, body.role)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    _audit(ctx, request, principal, "users.create" if created else "users.reset", body.username,
           {"role": body.role, "created": created, **({"old_role": before["role"]} if before and not created else {})})
    # a demoted user's keys keep no more than its new role (revocations audited)
    ctx.auth.revoke_keys_of(body.username, body.role, principal.name, request.client.host if request.client else "")
    user = store.get_user(ctx.storage, body.username)
    assert user is not None
    return UserOut(**{k: user[k] for k in UserOut.model_fields})


@router.delete("/v1/users/{username}", status_code=204, response_class=Response,
                     responses=NOT_FOUND, summary="Delete a user (admin)")
def delete_user(ctx: ContextDep, username: Username, principal: Admin, request: Request) -> Response:
    if username == principal.name:
        raise HTTPException(409, "you cannot delete yourself")
    user = store.get_user(ctx.storage, username)
    # the API keys the user created are revoked with it (each audited)
    if user is None or not ctx.auth.delete_user(username, principal.name,
                                                request.client.host if request.client else ""):
        raise HTTPException(404, f"unknown user {username!r}")
    _audit(ctx, request, principal, "users.delete", username, {"role": user["role"]})
    return Response(status_code=204)


@router.get("/v1/api-keys", response_model=ApiKeysOut, summary="API keys (admin; secrets are never shown)")
def api_keys(ctx: ContextDep) -> ApiKeysOut:
    return ApiKeysOut(keys=[ApiKeyOut(**k) for k in store.list_api_keys(ctx.storage)])


@router.post("/v1/api-keys", response_model=NewApiKeyOut, status_code=201,
                   summary="Create an API key (admin; the key is in this answer only)")
def create_api_key(ctx: ContextDep, body: ApiKeyIn, principal: Admin, request: Request) -> JSONResponse:
    key_id, key = ctx.auth.create_api_key(body.name, body.role, principal.name)
    _audit(ctx, request, principal, "api-keys.create", key_id, {"role": body.role, "name": body.name})
    row = {k: v for k, v in (store.get_api_key(ctx.storage, key_id) or {}).items() if k != "secret_sha256"}
    return JSONResponse(NewApiKeyOut(**row, key=key).model_dump(), status_code=201,
                        headers={"Cache-Control": "no-store"})


@router.delete("/v1/api-keys/{key_id}", status_code=204, response_class=Response, responses=NOT_FOUND,
                     summary="Revoke an API key and the keys it made (admin)")
def revoke_api_key(ctx: ContextDep, key_id: KeyId, principal: Admin, request: Request) -> Response:
    key = store.get_api_key(ctx.storage, key_id)
    if key is None:
        raise HTTPException(404, f"unknown key {key_id!r}")
    if ctx.auth.revoke_api_key(key_id):  # (already revoked: only the keys it made, below)
        _audit(ctx, request, principal, "api-keys.revoke", key_id,
               {"role": key.get("role"), "name": key.get("name"), "created_by": key.get("created_by")})
    # and the keys it made, and theirs (each audited): a leaked key's keys go with it, also when the key itself was
    # revoked already (before revoking cascaded, or a cascade that failed half-way)
    ctx.auth.revoke_keys_of(f"key:{key_id}", None, principal.name, request.client.host if request.client else "",
                            reason=f"creator key {key_id} revoked")
    return Response(status_code=204)


@router.get("/v1/audit", response_model=AuditOut, summary="The audit log, newest first (admin)",
                  description="Failed sign-ins and every write through the API: who, what, when, the answer's "
                              "status and the client's address.")
def audit(ctx: ContextDep, start_ms: FromMs = None, end_ms: ToMs = None,
          actor: Annotated[Text | None, Query(max_length=200)] = None,
          action: Annotated[Text | None, Query(max_length=200)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> AuditOut:
    check_range(start_ms, end_ms)
    rows, total = store.list_audit(ctx.storage, start_ms, end_ms, actor, action, limit, offset)
    return AuditOut(total=total, offset=offset, limit=limit, entries=[AuditEntryOut(**r) for r in rows])
