"""Sign-in (``/v1/auth/*``): the OAuth2 password flow, signing out, and who the caller is.

``POST /v1/auth/login`` takes a form with ``username`` and ``password`` and answers a
short-lived session token, also set as an HttpOnly cookie for the dashboard. Failed sign-ins
go to the audit log (users, keys and the log itself: :mod:`.admin`).
"""
from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Form, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from storelens.config.auth import Role
from ..deps import ContextDep, Text, api_router
from ..models import ErrorOut, _Out
from ..security import COOKIE_NAME, PrincipalDep, RateLimited, credential_of, set_session_cookie

log = logging.getLogger(__name__)

#: Open: the login form, and routes that check the session themselves (``me``).
router = api_router("auth", role=None)



class TokenOut(_Out):
    access_token: str = Field(description="Session token (JWT): send as `Authorization: Bearer <token>`.")
    token_type: str = "bearer"
    expires_in_s: int
    username: str
    role: Role


class MeOut(_Out):
    username: str = Field(description="User name, or `key:<key_id>` for an API key.")
    role: Role
    kind: str = Field(description="user, api_key or metrics.")


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post("/v1/auth/login", response_model=TokenOut,
             responses={401: {"model": ErrorOut, "description": "Wrong user name or password."},
                        429: {"model": ErrorOut, "description": "Too many attempts, or every password check of the "
                                                         "server busy; see Retry-After."}},
             summary="Sign in (OAuth2 password flow)",
             description="Form fields `username` and `password`. Answers a session token and sets the dashboard's "
                         "HttpOnly cookie. Attempts are rate-limited per client and per user name.")
def login(ctx: ContextDep, request: Request, response: Response,
          # no pattern: a name no user can have (a space, a password typed there) is a failed sign-in (401,
          # counted and limited), not a 422 echoing what was typed
          username: Annotated[Text, Form(min_length=1, max_length=64)],
          password: Annotated[Text, Form(min_length=1, max_length=1024)]) -> TokenOut:
    try:
        principal = ctx.auth.login(username, password, _client(request))
    except RateLimited as e:
        raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
    if principal is None:
        raise HTTPException(401, "wrong user name or password", headers={"WWW-Authenticate": "Bearer"})
    token, ttl = ctx.auth.issue(principal)
    set_session_cookie(response, token, ctx.auth.cfg)
    return TokenOut(access_token=token, expires_in_s=ttl, username=principal.name, role=principal.role)


@router.post("/v1/auth/logout", status_code=204, response_class=Response, summary="Sign out (clears the cookie)",
             description="Ends every session of the signed-in user (the bearer token or the cookie), on every "
                         "device, and clears the dashboard's cookie. Without a valid session it only clears the "
                         "cookie. 503 when the sessions could not be ended (the database): the sessions stay "
                         "valid and the cookie is kept, so a retry (from this browser too) can end them.",
             responses={503: {"model": ErrorOut, "description": "The sessions could not be ended."}})
def logout(ctx: ContextDep, request: Request) -> Response:
    credential = credential_of(request)
    try:
        principal = ctx.auth.sign_out(credential) if credential else None
    except Exception:  # the sessions could not be ended (the database): the cookie is kept, for the retry to end
        # them (cleared, the page's next request was a 401 that hid the failure, and a retry sent no credential)
        log.warning("sign-out: the sessions could not be ended", exc_info=True)
        ctx.metrics.count_error("sign_out_failed")
        return JSONResponse({"detail": "the sessions could not be ended (the database did not take the change): "
                                       "still signed in, here, on every other device and with any copy of the "
                                       "token; retry signing out"}, status_code=503)
    if principal is not None:  # the audit log's actor
        request.state.principal = principal
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/v1/auth/me", response_model=MeOut, summary="Who am I",
            responses={401: {"model": ErrorOut, "description": "Not signed in."}})
def me(principal: PrincipalDep) -> MeOut:
    return MeOut(username=principal.name, role=principal.role, kind=principal.kind)
