"""``tether ssf``: an SSF 1.0 transmitter over the revocations topic (aiohttp).

Endpoints (the metadata at ``/.well-known/ssf-configuration`` names them):

=================================  ==============================================================
``GET /.well-known/ssf-configuration``  transmitter metadata (public)
``GET /jwks.json``                 the keys SETs are signed with (public)
``POST|GET|PATCH|PUT|DELETE /ssf/stream``  create, read (one by ``stream_id``, or all), update,
                                   replace, delete a stream
``GET|POST /ssf/status``           a stream's status: ``enabled``, ``paused``, ``disabled``
``POST /ssf/subjects:add|remove``  subjects (default ``ALL``; a removed subject gets no events)
``POST /ssf/verify``               queue a verification event (with the receiver's ``state``)
``POST /ssf/poll/{stream_id}``     RFC 8936 poll: ``maxEvents``, ``returnImmediately``, ``ack``,
                                   ``setErrs`` in; ``sets``, ``moreAvailable`` out
=================================  ==============================================================

Every ``/ssf/`` call needs ``Authorization: Bearer <token>`` of a configured receiver, and sees
only that receiver's streams (another's answer 404, exactly like a missing one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from tether.security import SetSigner, SetVerifier
from tether.settings import Settings
from tether.ssf.delivery import StreamPump
from tether.ssf.streams import (
    EVENTS_SUPPORTED,
    POLL,
    PUSH,
    Delivery,
    Receiver,
    Stream,
    StreamStore,
    new_stream_id,
)

_log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SPEC_VERSION: Final = "1_0"
LONG_POLL_S: Final = 15.0
MAX_EVENTS_CAP: Final = 1000
_RECEIVER: Final = web.RequestKey("receiver", Receiver)


class Transmitter:
    """The streams, their pumps, and the keys: what every handler shares."""

    def __init__(  # one place wires the transmitter
        self,
        settings: Settings,
        store: StreamStore,
        signer: SetSigner,
        verifier_factory: Callable[[], SetVerifier],
        receivers: list[Receiver],
        base_url: str,
        *,
        long_poll_s: float = LONG_POLL_S,
    ) -> None:
        """Serve ``store``'s streams to ``receivers``; URLs in the metadata start ``base_url``."""
        self.settings = settings
        self.store = store
        self.signer = signer
        self.verifier_factory = verifier_factory
        self.receivers = receivers
        self.base_url = base_url.rstrip("/")
        self.long_poll_s = long_poll_s
        self.pumps: dict[str, tuple[StreamPump, asyncio.Task[None]]] = {}
        self.http: aiohttp.ClientSession | None = None

    # -- pumps ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the push client; start a pump per stored stream (positions from Kafka)."""
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for stream in self.store.all():
            self.start_pump(stream.stream_id)

    async def stop(self) -> None:
        """Stop every pump (each commits nothing it has not delivered), close the client."""
        for _pump, task in self.pumps.values():
            task.cancel()
        for _pump, task in self.pumps.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.pumps.clear()
        if self.http is not None:
            await self.http.close()

    def start_pump(self, stream_id: str) -> StreamPump:
        """The stream's pump, started if it was not running."""
        running = self.pumps.get(stream_id)
        if running is not None and not running[1].done():
            return running[0]
        assert self.http is not None  # noqa: S101  # start() ran
        pump = StreamPump(
            stream_id, self.store, self.settings, self.signer, self.verifier_factory(), self.http
        )
        task = asyncio.create_task(pump.run(), name=f"ssf-{stream_id}")
        task.add_done_callback(functools.partial(self._pump_ended, stream_id))
        self.pumps[stream_id] = (pump, task)
        return pump

    def _pump_ended(self, stream_id: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error("ssf stream %s: delivery stopped: %s; restarting", stream_id, exc)
            if self.store.all() and any(s.stream_id == stream_id for s in self.store.all()):
                asyncio.get_running_loop().call_later(1.0, self.start_pump, stream_id)

    # -- metadata ---------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """``/.well-known/ssf-configuration``."""
        base = self.base_url
        return {
            "spec_version": SPEC_VERSION,
            "issuer": self.signer.issuer,
            "jwks_uri": f"{base}/jwks.json",
            "delivery_methods_supported": [PUSH, POLL],
            "configuration_endpoint": f"{base}/ssf/stream",
            "status_endpoint": f"{base}/ssf/status",
            "add_subject_endpoint": f"{base}/ssf/subjects:add",
            "remove_subject_endpoint": f"{base}/ssf/subjects:remove",
            "verification_endpoint": f"{base}/ssf/verify",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
            "default_subjects": "ALL",
        }


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"err": "invalid_request", "description": description}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text="the body is not JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def ssf_app(tx: Transmitter) -> web.Application:  # noqa: PLR0915  # the handlers, in one place
    """The transmitter's application."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/ssf/"):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            receiver = None
            if scheme.lower() == "bearer":
                for candidate in tx.receivers:  # constant time: a token is not guessable bytewise
                    if hmac.compare_digest(candidate.token.encode(), token.strip().encode()):
                        receiver = candidate
            if receiver is None:
                return web.json_response(
                    {"err": "authentication_failed"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            request[_RECEIVER] = receiver
        response: web.StreamResponse = await handler(request)
        return response

    def owner(request: web.Request) -> Receiver:
        return request[_RECEIVER]

    def find(request: web.Request, stream_id: object) -> Stream:
        stream = (
            tx.store.get(stream_id, owner(request).name) if isinstance(stream_id, str) else None
        )
        if stream is None:
            raise web.HTTPNotFound(text="no such stream")
        return stream

    async def well_known(_request: web.Request) -> web.Response:
        return web.json_response(tx.metadata())

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response({"keys": [tx.signer.public_jwk()]})

    def build(request: web.Request, body: dict[str, Any], stream_id: str) -> Stream:
        receiver = owner(request)
        delivery = dict(body.get("delivery") or {"method": POLL})
        if delivery.get("method") == POLL:
            delivery["endpoint_url"] = f"{tx.base_url}/ssf/poll/{stream_id}"
        elif delivery.get("method") == PUSH:
            url = delivery.get("endpoint_url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise web.HTTPBadRequest(text="push delivery needs an http(s) endpoint_url")
            allowed = receiver.push_url_prefixes
            if allowed and not url.startswith(allowed):
                raise web.HTTPBadRequest(text="endpoint_url is not one this receiver may use")
        requested = body.get("events_requested", list(EVENTS_SUPPORTED))
        try:
            return Stream(
                stream_id=stream_id,
                owner=receiver.name,
                iss=tx.signer.issuer,
                aud=receiver.audience,
                events_requested=requested,
                delivery=Delivery.model_validate(delivery),
                description=body.get("description"),
            )
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=f"invalid stream configuration: {exc}") from exc

    async def create(request: web.Request) -> web.Response:
        body = await _json(request)
        receiver = owner(request)
        if len(tx.store.owned(receiver.name)) >= receiver.max_streams:
            return _error(409, f"at most {receiver.max_streams} streams per receiver")
        stream = build(request, body, new_stream_id())
        tx.store.put(stream)
        tx.start_pump(stream.stream_id)
        return web.json_response(stream.public(), status=201)

    async def read(request: web.Request) -> web.Response:
        stream_id = request.query.get("stream_id")
        if stream_id is None:
            return web.json_response([s.public() for s in tx.store.owned(owner(request).name)])
        return web.json_response(find(request, stream_id).public())

    async def update(request: web.Request) -> web.Response:
        body = await _json(request)
        old = find(request, body.get("stream_id"))
        if request.method == "PUT":
            new = build(request, body, old.stream_id).model_copy(
                update={"status": old.status, "excluded_subjects": old.excluded_subjects}
            )
        else:
            merged = {**old.public(), **body}
            merged["delivery"] = body.get("delivery", old.delivery.model_dump(exclude_none=True))
            new = build(request, merged, old.stream_id).model_copy(
                update={"status": old.status, "excluded_subjects": old.excluded_subjects}
            )
        tx.store.put(new)
        return web.json_response(new.public())

    async def delete(request: web.Request) -> web.Response:
        stream = find(request, request.query.get("stream_id"))
        tx.store.delete(stream.stream_id)
        running = tx.pumps.pop(stream.stream_id, None)
        if running is not None:
            running[1].cancel()
        return web.Response(status=204)

    async def status_get(request: web.Request) -> web.Response:
        stream = find(request, request.query.get("stream_id"))
        body = {"stream_id": stream.stream_id, "status": stream.status}
        if stream.reason:
            body["reason"] = stream.reason
        return web.json_response(body)

    async def status_post(request: web.Request) -> web.Response:
        body = await _json(request)
        stream = find(request, body.get("stream_id"))
        status = body.get("status")
        if status not in ("enabled", "paused", "disabled"):
            return _error(400, "status must be enabled, paused or disabled")
        stream = stream.model_copy(update={"status": status, "reason": body.get("reason")})
        tx.store.put(stream)
        out = {"stream_id": stream.stream_id, "status": stream.status}
        if stream.reason:
            out["reason"] = stream.reason
        return web.json_response(out)

    async def subjects(request: web.Request) -> web.Response:
        body = await _json(request)
        stream = find(request, body.get("stream_id"))
        subject = body.get("subject")
        if not isinstance(subject, dict) or "format" not in subject:
            return _error(400, "subject must be a subject identifier with a format")
        excluded = [s for s in stream.excluded_subjects if s != subject]
        added = [s for s in stream.added_subjects if s != subject]
        if request.path.endswith(":remove"):
            excluded.append(subject)
            status = 204
        else:
            added.append(subject)
            status = 200
        tx.store.put(
            stream.model_copy(update={"excluded_subjects": excluded, "added_subjects": added})
        )
        return web.Response(status=status)

    async def verify(request: web.Request) -> web.Response:
        body = await _json(request)
        stream = find(request, body.get("stream_id"))
        state = body.get("state")
        tx.start_pump(stream.stream_id).verification(
            stream, state if isinstance(state, str) else None
        )
        return web.Response(status=204)

    async def poll(request: web.Request) -> web.Response:
        stream = find(request, request.match_info["stream_id"])
        if stream.delivery.method != POLL:
            return _error(400, "this stream is delivered by push")
        body = await _json(request)
        max_events = body.get("maxEvents", 100)
        if not isinstance(max_events, int) or isinstance(max_events, bool) or max_events < 0:
            return _error(400, "maxEvents must be a non-negative integer")
        acks = body.get("ack", [])
        errs = body.get("setErrs", {})
        if not isinstance(acks, list) or not isinstance(errs, dict):
            return _error(400, "ack must be a list and setErrs an object")
        pump = tx.start_pump(stream.stream_id)
        if body.get("returnImmediately", False) is False and max_events > 0:
            deadline = asyncio.get_running_loop().time() + tx.long_poll_s
            while not pump.has_undelivered():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                pump.poll.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pump.poll.changed.wait(), min(remaining, 0.5))
        sets, more = pump.poll_once(min(max_events, MAX_EVENTS_CAP), [str(a) for a in acks], errs)
        return web.json_response({"sets": sets, "moreAvailable": more})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/.well-known/ssf-configuration", well_known)
    app.router.add_get("/jwks.json", jwks)
    app.router.add_post("/ssf/stream", create)
    app.router.add_get("/ssf/stream", read)
    app.router.add_patch("/ssf/stream", update)
    app.router.add_put("/ssf/stream", update)
    app.router.add_delete("/ssf/stream", delete)
    app.router.add_get("/ssf/status", status_get)
    app.router.add_post("/ssf/status", status_post)
    app.router.add_post("/ssf/subjects:add", subjects)
    app.router.add_post("/ssf/subjects:remove", subjects)
    app.router.add_post("/ssf/verify", verify)
    app.router.add_post("/ssf/poll/{stream_id}", poll)
    return app


def verifier_factory(settings: Settings) -> Callable[[], SetVerifier]:
    """A fresh verifier per stream (its own replay memory)."""
    from tether.security.keys import verifier_from_settings  # noqa: PLC0415

    def make() -> SetVerifier:
        return verifier_from_settings(settings)

    return make
