"""``/docs``: Swagger UI served from this process, never from a CDN.

FastAPI's own page loads Swagger UI's script and style from a public CDN (and its favicon from
FastAPI's site): an operator's browser would run whatever that host serves, with the API token
typed into the page. Here the files come from the ``swagger-ui-bundle`` package (the ``api-docs``
extra, installed in the image and for development), under ``/docs/assets``, and the page says so
in its Content-Security-Policy (``'self'`` only). Without that package ``/docs`` is not served;
``/openapi.json`` always is.
"""

from __future__ import annotations

import importlib.util

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the page's scripts, styles and icons are served.
ASSETS = "/docs/assets"
#: The page may load and connect to this origin only (the inline script starts Swagger UI).
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")


def available() -> bool:
    """True when the Swagger UI files are installed (``pip install 'actionrunner[api-docs]'``)."""
    return importlib.util.find_spec("swagger_ui_bundle") is not None


def install(api: FastAPI) -> bool:
    """Serve ``/docs`` on ``api`` from the installed files; False (and no ``/docs``) without them."""
    if not available():
        return False
    from swagger_ui_bundle import swagger_ui_path

    api.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json", title=f"{api.title} — docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    return True
