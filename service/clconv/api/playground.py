"""The web playground: static HTML, CSS and JavaScript that call the public ``/v1`` API.

The files are the package data ``clconv.playground``. ``/`` serves its ``index.html`` and
``/playground/`` serves the whole folder. The page loads nothing from other hosts, and its
Content-Security-Policy header makes the browser block any such request.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

# Images come from the package, from `blob:` URLs of uploaded files and from canvases
# (`data:`); scripts, styles and fetch() go only to this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def playground_directory() -> Path:
    """Return the folder of the installed ``clconv.playground`` package data."""
    # Both the editable install and a wheel unpack the package to real files, which
    # StaticFiles needs; a zipped install is not supported.
    return Path(str(resources.files("clconv.playground")))


def mount_playground(app: FastAPI) -> None:
    """Serve the playground page at ``/`` and its files at ``/playground/``."""
    directory = playground_directory()
    index = directory / "index.html"

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def playground_index() -> FileResponse:
        return FileResponse(
            index,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    app.mount("/playground", StaticFiles(directory=directory), name="playground")
