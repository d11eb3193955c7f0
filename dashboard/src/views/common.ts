// Hooks shared by the views.
import { useEffect, useState } from "react";
import { useApi, type CamerasOut } from "../api";

/** The configured cameras and the selected one (the first by default). */
export function useCameras() {
  const cams = useApi<CamerasOut>("/v1/cameras");
  const [cameraId, setCameraId] = useState<string>("");
  useEffect(() => {
    if (!cameraId && cams.data && cams.data.cameras.length) setCameraId(cams.data.cameras[0].id);
  }, [cams.data, cameraId]);
  const camera = cams.data?.cameras.find((c) => c.id === cameraId) ?? null;
  return { cams, cameraId, setCameraId, camera };
}
