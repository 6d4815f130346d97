"""The HTTP side of ``serve``: every request to ``POST /why`` checked, timed and decoded before LitServe sees it.

Two layers, because uvicorn has no timeout on receiving a request (``timeout_keep_alive`` only covers the idle
time between requests, and is reset by every byte; encode/uvicorn#157 lists request timeouts as not done):

- :func:`request_deadline_protocol` wraps uvicorn's HTTP protocol: from the moment a connection opens, or its
  previous response ends, the client has ``seconds`` to send a whole request (headers and body); otherwise the
  connection is closed. This also covers a client that stalls in its headers, before any ASGI code runs.
- :class:`WhyRequestMiddleware` (ASGI) reads the body of ``POST /why`` within ``body_timeout`` (408 and the
  connection closed after), refuses it over ``max_bytes`` (413), parses and decodes it in a thread with at most
  ``decoders`` uploads decoding at once (so memory does not grow with the number of clients; each decode is
  itself budgeted, see :mod:`sae_lab.inference.upload`), hands LitServe the decoded ink as JSON, and answers 504
  when no answer comes within ``response_timeout`` — LitServe's own timeout covers only the wait in its queue, so
  a request held by an inference worker that crashed would otherwise wait forever while LitServe restarts it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from sae_lab.inference.upload import Limits, RequestError, decode_upload, extract_image

logger = logging.getLogger(__name__)


class WhyRequestMiddleware:
    """ASGI middleware for ``POST <path>``: limits, timeouts and decoding; refused requests answered with
    ``{"detail": "…"}`` and a 4xx/5xx status, good ones passed on as JSON ``{"name", "ink"}`` (ink: base64
    float32 (1, S, S))."""

    def __init__(self, app, *, path: str, image_size: int, max_bytes: int, limits: Limits, body_timeout: float,
                 response_timeout: float, decoders: int):  # fmt: skip
        self.app, self.path, self.image_size = app, path.rstrip("/"), image_size
        self.max_bytes, self.limits = max_bytes, limits
        self.body_timeout, self.response_timeout, self.decoders = body_timeout, response_timeout, decoders
        self._slots: asyncio.Semaphore | None = None  # made in the serving process's event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise RequestError(413, f"request body of {declared} bytes, over --max-bytes {self.max_bytes}")
            try:
                body = await asyncio.wait_for(self._read_body(receive), self.body_timeout)
            except asyncio.TimeoutError:
                raise RequestError(
                    408, f"request body not received within --body-timeout {self.body_timeout:g} s"
                ) from None
            if body is None:  # the client went away
                return
        except RequestError as e:  # the body was not read to its end: close rather than resynchronise
            await send_json(send, e.status, {"detail": e.detail}, close=True)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.decoders)
        try:
            async with self._slots:
                name, ink = await asyncio.to_thread(self._decode, body, headers.get("content-type", ""))
        except RequestError as e:
            await send_json(send, e.status, {"detail": e.detail})
            return
        payload = json.dumps({"name": name, "ink": ink}).encode()
        keep = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
        scope = {**scope, "headers": [*keep, (b"content-type", b"application/json"),
                                      (b"content-length", str(len(payload)).encode())]}  # fmt: skip
        await self._answer(scope, payload, receive, send)

    async def _read_body(self, receive) -> bytes | None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                raise RequestError(413, f"request body over --max-bytes {self.max_bytes}")
            if not message.get("more_body"):
                return bytes(body)

    def _decode(self, body: bytes, content_type: str) -> tuple[str, str]:
        data, name = extract_image(body, content_type)
        ink = decode_upload(data, self.image_size, self.limits)
        return name or "upload", base64.b64encode(ink.numpy().tobytes()).decode()

    async def _answer(self, scope, payload: bytes, receive, send) -> None:
        sent, started = False, False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, replay, tracked_send), self.response_timeout)
        except asyncio.TimeoutError:
            if started:  # a response was under way: only closing the connection can end it now
                raise
            detail = (f"no answer within --timeout {self.response_timeout:g} s (the inference worker may have "
                      "crashed and be restarting; retry)")  # fmt: skip
            logger.warning("POST %s: %s", self.path, detail)
            await send_json(send, 504, {"detail": detail}, close=True)


async def send_json(send, status: int, obj: Any, close: bool = False) -> None:
    """Sends a whole JSON response; ``close`` asks the server to close the connection after it."""
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def request_deadline_protocol(seconds: float, base: type | None = None) -> type:
    """uvicorn's HTTP protocol class (``base``, default: the one uvicorn picks, httptools or h11) closing any
    connection that has not delivered a whole request ``seconds`` after it opened or after its last response;
    pass it to uvicorn as ``http=``. A request that is being answered is never cut."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class RequestDeadlineProtocol(base):  # type: ignore[misc, valid-type]
        request_deadline = seconds
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(self.request_deadline, self._deadline_passed)

        def _deadline_passed(self) -> None:
            cycle = self.cycle  # the latest request on this connection (None: none yet)
            waiting = cycle is None or cycle.response_complete  # for the next request's headers
            receiving = cycle is not None and cycle.more_body and not cycle.response_complete
            if (waiting or receiving) and not self.transport.is_closing():
                logger.info("closing a connection that sent no whole request within %g s", self.request_deadline)
                self.transport.close()

    return RequestDeadlineProtocol
