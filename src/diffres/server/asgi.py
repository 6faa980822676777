"""The ASGI app for servers other than `diffres serve`: `uvicorn diffres.server.asgi:app` (settings from DIFFRES_*)."""

from diffres.server.app import create_app

app = create_app()
