"""`python -m app` / `diffres-serve`: run uvicorn with the settings' host, port and connection limits, JSON logs."""

from __future__ import annotations

import uvicorn

from app.config import get_settings
from app.http_guard import guarded_protocol
from app.logs import configure_logging
from app.main import create_app


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON handler
        access_log=False,  # the middleware writes the access log, with the request id
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        http=guarded_protocol(settings),  # header deadline and size, connection cap
        server_header=False,
    )


if __name__ == "__main__":
    main()
