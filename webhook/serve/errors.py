"""Every HTTP error of the webhook's apps is a JSON `Status` (issue 11, item 7).

Starlette answers an unknown path (404) and a wrong method (405) with its own bodies, and
redirects a path with a trailing slash (POST /mutate/ got a 307 to https://localhost/mutate:
a host the API server cannot reach). The apps are built with redirect_slashes off and
these handlers, so that every 4xx says what is wrong in the same shape as the admission
app's own (core.admission.bad_request_body).
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException

from webhook.core.admission import bad_request_body


async def _status(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = bad_request_body(str(exc.detail), exc.status_code)
    return Response(
        orjson.dumps(body),
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
        media_type="application/json",
    )


def json_status_errors(app: FastAPI) -> FastAPI:
    """`app` answering its HTTP errors with a JSON Status and never redirecting a slash."""
    app.router.redirect_slashes = False
    app.add_exception_handler(HTTPException, _status)
    return app
