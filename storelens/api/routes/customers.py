"""Customers recognised by face (pseudonymous ids, no images): list, detail and erasure (``/v1/customers``).

Every route needs the customer gallery (``GalleryDep``) and answers 503 when
face recognition is disabled.
"""
from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Response

from storelens.config import entrance_lines_of, journeys_of

from ..deps import (
    ConfigDep, CustomerId, ErasureDep, FromMs, GalleryDep, StorageDep, ToMs, api_router, check_range, require_role,
)
from ..models import (
    FACES_OFF, UNKNOWN_CUSTOMER, AttributeSummaryOut, CustomerOut, CustomersOut, CustomerSummaryOut,
    CustomerTrackOut, VisitOut,
)

#: Largest ``page_size`` of ``/v1/customers``, and the largest ``page``.
MAX_PAGE_SIZE = 500
MAX_PAGE = 1_000_000

log = logging.getLogger(__name__)
router = api_router("customers", role='manager')


def _unknown(customer_id: str) -> HTTPException:
    return HTTPException(404, f"unknown customer {customer_id!r}")


@router.get("/v1/customers", response_model=CustomersOut, responses=FACES_OFF,
            summary="Customers recognised by face, paged",
            description="Customers of the gallery, most recently seen first (not staff: a customer whose every "
            "matched track is a staff track is left out). `returning` keeps only returning "
            "(or only first-time) customers; `start_ms`/`end_ms` keep customers with a visit overlapping "
            "[start_ms, end_ms). With a range, `returning` is of the range: true keeps customers with a visit "
            "overlapping it that is their second or later, false those whose only visit in it is their first (a "
            "customer first seen in March and back in April is first-time in March). Each item's `visits`, "
            "`first_seen_ts_ms`, `last_seen_ts_ms` and `returning` cover all the customer's retained visits.")
def list_customers(
    store: GalleryDep,
    storage: StorageDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number, from 1.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Customers per page.")] = 50,
    returning: Annotated[bool | None, Query(description="Only returning (true) or first-time (false); with a "
                                            "range, returning in it (a visit in it is the second or later).")]
    = None,
    start_ms: FromMs = None,
    end_ms: ToMs = None,
) -> CustomersOut:
    check_range(start_ms, end_ms)
    # staff enrolled by reid (every matched track a staff track: uniform, staff-only zone) are no customers
    staff_only = getattr(storage, "staff_only_customers", None)
    exclude = staff_only() if staff_only is not None else []
    total, items = store.list_customers(returning=returning, from_ts_ms=start_ms, to_ts_ms=end_ms,
                                        limit=page_size, offset=(page - 1) * page_size,
                                        **({"exclude": exclude} if exclude else {}))
    return CustomersOut(total=total, page=page, page_size=page_size, items=[
        CustomerSummaryOut(customer_id=c.customer_id, created_ts_ms=c.created_ts_ms, visits=c.visits,
                           first_seen_ts_ms=c.first_seen_ts_ms, last_seen_ts_ms=c.last_seen_ts_ms,
                           returning=c.returning, cameras=list(c.cameras))
        for c in items
    ])


@router.get("/v1/customers/{customer_id}", response_model=CustomerOut,
            responses={**UNKNOWN_CUSTOMER, **FACES_OFF},
            summary="One customer: visits, matched tracks and their attributes",
            description="The customer's visits, the tracks matched to them with their face attributes, and a "
            "summary (the most confident known gender, the best-supported age).")
def get_customer(customer_id: CustomerId, store: GalleryDep, storage: StorageDep) -> CustomerOut:
    if not store.customer_exists(customer_id):
        raise _unknown(customer_id)
    visits = store.visits(customer_id)
    tracks = storage.customer_tracks(customer_id)
    returning = visits[-1].returning if visits else any(t["returning"] for t in tracks)
    return CustomerOut(
        customer_id=customer_id, returning=returning,
        visits=[VisitOut(visit_no=v.visit_no, first_seen_ts_ms=v.first_ts_ms, last_seen_ts_ms=v.last_ts_ms,
                         cameras=list(v.cameras)) for v in visits],
        tracks=[CustomerTrackOut.model_validate(t) for t in tracks],
        summary=AttributeSummaryOut.from_tracks(tracks),
    )


@router.delete("/v1/customers/{customer_id}", status_code=204, response_class=Response,
               dependencies=[Depends(require_role("admin"))],
               responses={**UNKNOWN_CUSTOMER, **FACES_OFF, 204: {"description": "The customer was erased."}},
               summary="Erase a customer (right to erasure; admin)",
               description="Deletes from the history every row derived from the customer: the track-to-customer "
               "links, and for each matched track (and each track linked to one in a journey) its face "
               "attributes, track summary, track points and zone events, and keeps those tracks' later rows out "
               "of the history; then the customer's embeddings and visits from the gallery (their tracks stay marked "
               "erased there: never decided again); then tells the "
               "recognition service to forget them. The notification is sent even for an unknown id, so retrying "
               "a request that failed (500, 503) completes the erasure; an id the stores no longer hold answers "
               "204 while an earlier erasure of it has not been told to the recognition service (recorded with "
               "the history's deletion until the notification went out: the retry a 503 asked for), else 404 "
               "(an id never erased, or erased with a 204).")
def erase_customer(customer_id: CustomerId, store: GalleryDep, storage: StorageDep, config: ConfigDep,
                   on_erasure: ErasureDep, request: Request) -> Response:
    decided = getattr(store, "decided_tracks", None)  # tracks whose match the history may not have yet
    tracks = decided(customer_id) if decided is not None else set()
    # The tracks the history matched to them keep an ``erased`` decision in the gallery, also those whose decision
    # the reid stage forgot at the end of their stream: a rerun of the same file (same track ids) never enrols them
    # again. First, so a retry after a later failure still finds the history's matches.
    known = getattr(storage, "customer_track_times", None)
    mark = getattr(store, "erase_track_decisions", None)
    if known is not None and mark is not None:
        mark(known(customer_id))
    # The history first: the gallery's delete forgets which tracks were the customer's, so a retry after a failure
    # of the history's erasure (500) still finds them; after a failure of the gallery's delete, both run again.
    # Its transaction records the erasure pending (rows deleted, or the gallery holds the customer) until the
    # notification went out: a retry of a request that failed after it answers 204; an id never erased has no record.
    rows = storage.erase_customer(customer_id, journeys_of(config), entrance_lines_of(config), tracks,
                                  pending=store.customer_exists(customer_id))
    in_gallery = store.delete_customer(customer_id)
    pending = storage.erasure_pending(customer_id)  # this request's, or an earlier one's not told yet
    if on_erasure is not None:
        try:
            on_erasure(customer_id)
        except Exception:
            log.exception("customer erasure not propagated", extra={"customer_id": customer_id})
            raise HTTPException(503, "the customer was deleted from the stores, but the erasure could not be "
                                "sent to the recognition service; retry the request") from None
    if pending:
        try:
            storage.erasure_sent(customer_id)
        except Exception:  # the erasure is done; a later request for the id sends the notification again (204)
            log.warning("could not clear the pending erasure record", exc_info=True,
                        extra={"customer_id": customer_id})
            request.app.state.context.metrics.count_error("pending_erasure_not_cleared")
    if not (in_gallery or rows or pending):
        raise _unknown(customer_id)
    return Response(status_code=204)
