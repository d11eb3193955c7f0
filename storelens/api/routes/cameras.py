"""Site configuration: the cameras of the store with their counting lines and zones (``/v1/cameras``)."""
from __future__ import annotations

from ..deps import ConfigDep, api_router
from ..models import CameraOut, CamerasOut, LineOut, ZoneOut

router = api_router("config", role='viewer')


@router.get("/v1/cameras", response_model=CamerasOut, summary="Cameras, lines and zones")
def list_cameras(config: ConfigDep) -> CamerasOut:
    return CamerasOut(
        store_id=config.store.id,
        cameras=[
            CameraOut(
                id=c.id,
                lines=[LineOut(id=ln.id, a=ln.a, b=ln.b) for ln in c.lines],
                zones=[ZoneOut(id=z.id) for z in c.zones],
            )
            for c in config.cameras
        ],
    )
