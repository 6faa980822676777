"""The demo page at `/`: a static page (plain HTML/JS/CSS in server/static, no build step, no CDN).

It only calls the public API (/v1/models, /v1/classify with include_spectrogram), so whatever it
shows, a client can get too. Clients that ask for JSON at `/` still get the small service index.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/static"
router = APIRouter()


@router.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    """The page for browsers; the JSON index for API clients (`Accept: application/json`)."""
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
    return JSONResponse({"service": "diffres-service", "demo": "/", "docs": "/docs", "models": "/v1/models"})


def install_demo(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
