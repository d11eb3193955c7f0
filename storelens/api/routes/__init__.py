"""The API's routers, one module a resource; :data:`ROUTERS` in the order the app includes them."""
from __future__ import annotations

from fastapi import APIRouter

from . import (admin, alerts, audit, auth, business, cameras, chain, counts, crossings, customers, demographics, health, heatmap,
               journeys, live, occupancy, site, tracks, zones)

#: Every router of the API (the order of the paths in the OpenAPI schema).
ROUTERS: tuple[APIRouter, ...] = (
    health.router, auth.router, admin.router, cameras.router, counts.router, occupancy.router, tracks.router,
    crossings.router, demographics.router, customers.router, zones.router, journeys.router, heatmap.router, business.router,
    chain.router, alerts.router, live.router, site.router, audit.router,
)
