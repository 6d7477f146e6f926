"""A cap on the size of request bodies, and no connection left reading a body nobody wants.

A request whose ``Content-Length`` is over the cap is answered at once, its body unread; one
without a length (chunked) is counted as it streams in and answered 413 as soon as the count
passes the cap. Starlette has no such limit of its own, and uvicorn none for bodies.

Any answer sent while the request's body is not read to its end (a 401 or 403 decided from the
headers, a 413) says ``Connection: close``, and uvicorn closes the connection once it is sent:
kept alive, the server would go on reading (and discarding) whatever the client streams, without
end for a chunked body.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"")
    return b"transfer-encoding" in headers or (length != b"" and length.strip() != b"0")


class BodyLimit:
    """ASGI middleware: bodies of at most ``max_bytes``; an answer that leaves the body unread
    closes the connection."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"detail": self._too_large()}, 413,
                               headers={"Connection": "close"})(scope, receive, send)
            return
        received, unread = 0, _has_body(headers)

        async def counted() -> Message:
            nonlocal received, unread
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # raised inside the route's body reading: FastAPI lets an HTTPException through
                    raise HTTPException(413, self._too_large(), headers={"Connection": "close"})
                if not message.get("more_body", False):
                    unread = False
            return message

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and unread:
                MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        await self.app(scope, counted, closing)
