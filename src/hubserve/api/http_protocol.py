"""uvicorn's HTTP protocol with a deadline for each request head: a client that opens a connection and sends its
headers slowly, or never, is cut off instead of holding a connection for ever (slowloris).

uvicorn times out idle keep-alive connections only between requests, and not at all before the first one or once
a request's first bytes arrived.

Each request's scope also carries its uvicorn request cycle under `WIRE`, the connection a relayed event stream
(`hubserve.api.event_relay`) writes its chunks to.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hubserve")

_MESSAGE = b"the request head did not arrive in time"
WIRE = "hubserve.wire"
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_MESSAGE), _MESSAGE))


def with_head_timeout(seconds: float) -> type[HttpToolsProtocol]:
    """The protocol class to give `uvicorn.Config(http=...)`."""

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(seconds, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                log.info("%s: closed, its request head took over %g s", self.client or "a client", seconds)
                self.transport.write(REQUEST_TIMEOUT)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # for the first request; later ones are armed by their first byte

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.scope is self.scope:  # not an upgrade, which makes no cycle
                self.scope[WIRE] = self.cycle  # type: ignore[literal-required]

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadTimeoutProtocol
