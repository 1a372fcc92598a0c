"""``tether console``: a live web console over the pipeline's topics (aiohttp, no build step).

- ``/``: the live feed of findings and revocations (server-sent events, filterable by severity,
  code, workload and workflow), newest first, without reloading;
- ``/workflow/{id}``: its timeline in event time (events, decisions, findings, revocations), its
  grant, and its delegation chain drawn as an inline SVG graph;
- ``/health``: each worker's heartbeats and input lag, the revocation latency of the last
  minutes, dead letters by reason (``/api/health`` as JSON).

Sign-in with a configured credential (``TETHER_CONSOLE_TOKEN``): without it the console does not
start; without a valid session cookie or ``Authorization: Bearer`` header every page redirects
to ``/login`` and every API or feed request is refused (401). It binds to 127.0.0.1 unless told
otherwise. Everything is served by this module: no CDN, no script from elsewhere
(``Content-Security-Policy: default-src 'self'``).

The topics are read by one thread (``KafkaFeed``) that hands batches to the event loop; the
state it fills is bounded (``console_state``), and a browser that cannot keep up loses the
oldest items of its own queue (it is told how many), never the pipeline's pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any, Final

import orjson
from aiohttp import web
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tether.adapters.kafka_config import consumer_config
from tether.settings import Settings
from tether.soc import console_assets as assets
from tether.soc.console_state import ConsoleState, matches
from tether.soc.console_svg import chain_svg
from tether.topics import DEADLETTER, DECISIONS, FINDINGS, INTENTS, REVOCATIONS

log = logging.getLogger(__name__)

COOKIE: Final = "tether_console"
QUEUE_MAX: Final = 10_000
REPLAY_ON_CONNECT: Final = 200
FILTERS: Final = ("severity", "code", "workload", "workflow")
RESCAN_S: Final = 5.0  # how often the console looks for topics or partitions it does not read yet

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_value(token: str) -> str:
    """The cookie a signed-in browser holds: derived from the credential, never the credential."""
    return hmac.new(token.encode(), b"tether-console-session", hashlib.sha256).hexdigest()


class Hub:
    """Fans feed items out to the connected browsers, each with its own bounded queue."""

    def __init__(self) -> None:
        self.subscribers: dict[int, tuple[asyncio.Queue[dict[str, Any]], dict[str, str]]] = {}
        self.gaps: dict[int, int] = {}
        self._next = 0

    def subscribe(self, filters: dict[str, str]) -> tuple[int, asyncio.Queue[dict[str, Any]]]:
        self._next += 1
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.subscribers[self._next] = (q, filters)
        self.gaps[self._next] = 0
        return self._next, q

    def unsubscribe(self, sid: int) -> None:
        self.subscribers.pop(sid, None)
        self.gaps.pop(sid, None)

    def publish(self, item: dict[str, Any]) -> None:
        for sid, (q, filters) in self.subscribers.items():
            if not matches(item, filters):
                continue
            if q.full():  # a slow browser loses its oldest item, not the feed its pace
                q.get_nowait()
                self.gaps[sid] += 1
            q.put_nowait(item)


class Console:
    """The state, the hub and the web app around them."""

    def __init__(self, token: str, state: ConsoleState | None = None) -> None:
        if not token:
            raise ValueError("the console needs a credential (TETHER_CONSOLE_TOKEN)")
        self.token = token
        self.session = session_value(token)
        self.state = state or ConsoleState()
        self.hub = Hub()

    # -- feeding -----------------------------------------------------------------------------

    def ingest(self, batch: list[tuple[str, bytes | None, bytes]]) -> None:
        """A batch of (topic kind, key, value) from the reader; on the event loop."""
        st = self.state
        for kind, key, value in batch:
            try:
                if kind == REVOCATIONS:
                    self._revocation_record(key, value)
                    continue
                doc = orjson.loads(value)
                if not isinstance(doc, dict):
                    continue
                if kind == FINDINGS:
                    self.hub.publish(st.on_finding(doc))
                elif kind == INTENTS:
                    st.on_event(doc)
                elif kind == DECISIONS:
                    st.on_decision(doc)
                elif kind == DEADLETTER:
                    st.on_deadletter(doc)
            except Exception as exc:  # one bad record must not stop the console
                log.debug("console: unreadable %s record: %s", kind, exc)
                st.counts["unreadable"] += 1

    def _revocation_record(self, key: bytes | None, value: bytes) -> None:
        from tether.security import peek  # noqa: PLC0415  # joserfc loads on use

        rec = peek(value).model_dump(mode="json")
        if rec.get("kind") == "heartbeat":
            self.state.on_heartbeat(rec)
        else:
            self.hub.publish(self.state.on_revocation(rec))

    # -- web ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth, _headers])
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/", self.feed_page)
        app.router.add_get("/events", self.events)
        app.router.add_get("/workflow/{workflow_id}", self.workflow_page)
        app.router.add_get("/health", self.health_page)
        app.router.add_get("/api/health", self.api_health)
        app.router.add_get("/api/feed", self.api_feed)
        app.router.add_get("/api/workflow/{workflow_id}", self.api_workflow)
        app.router.add_get("/static/console.js", self.script)
        return app

    def signed_in(self, request: web.Request) -> bool:
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie, self.session):
            return True
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and hmac.compare_digest(
            auth[7:].encode(), self.token.encode()
        )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login" or self.signed_in(request):
            return await handler(request)
        if request.path.startswith(("/api/", "/events", "/static/")):
            raise web.HTTPUnauthorized(text="sign in first")
        raise web.HTTPFound("/login")

    async def login_page(self, request: web.Request) -> web.Response:
        return _html(assets.login_page(error=False))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token", ""))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _html(assets.login_page(error=True), status=401)
        resp = web.HTTPFound("/")
        resp.set_cookie(COOKIE, self.session, httponly=True, samesite="Strict", path="/")
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = web.HTTPFound("/login")
        resp.del_cookie(COOKIE, path="/")
        raise resp

    async def feed_page(self, request: web.Request) -> web.Response:
        filters = {k: request.query.get(k, "") for k in FILTERS}
        return _html(assets.feed_page(filters))

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(text=assets.CONSOLE_JS, content_type="application/javascript")

    async def events(self, request: web.Request) -> web.StreamResponse:
        filters = {k: v for k in FILTERS if (v := request.query.get(k, ""))}
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        recent = [i for i in self.state.feed if matches(i, filters)][-REPLAY_ON_CONNECT:]
        for item in recent:
            await resp.write(_sse(item))
        sid, q = self.hub.subscribe(filters)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), timeout=15)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                chunk = [_sse(item)]
                while not q.empty() and len(chunk) < 500:  # noqa: PLR2004
                    chunk.append(_sse(q.get_nowait()))
                gap = self.hub.gaps.get(sid, 0)
                if gap:
                    self.hub.gaps[sid] = 0
                    chunk.append(b"event: gap\ndata: " + str(gap).encode() + b"\n\n")
                await resp.write(b"".join(chunk))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.unsubscribe(sid)
        return resp

    async def workflow_page(self, request: web.Request) -> web.Response:
        wf_id = request.match_info["workflow_id"]
        wf = self.state.workflows.get(wf_id)
        if wf is None:
            return _html(assets.page("Workflow", f"<p>No workflow {escape(wf_id)} seen.</p>"), 404)
        flagged = {
            str(i.get("workload_id"))
            for i in self.state.feed
            if i.get("kind") == "finding" and i.get("workflow_id") == wf_id
        }
        svg = chain_svg(wf.initiator, wf.delegations, flagged)
        return _html(assets.workflow_page(wf, svg))

    async def api_workflow(self, request: web.Request) -> web.Response:
        wf = self.state.workflows.get(request.match_info["workflow_id"])
        if wf is None:
            raise web.HTTPNotFound
        return _json(
            {
                "workflow_id": wf.workflow_id,
                "grant": wf.grant,
                "initiator": wf.initiator,
                "delegations": wf.delegations,
                "timeline": wf.ordered(),
                "dropped": wf.dropped,
            }
        )

    async def health_page(self, request: web.Request) -> web.Response:
        return _html(assets.health_page())

    async def api_health(self, request: web.Request) -> web.Response:
        return _json(self.state.health())

    async def api_feed(self, request: web.Request) -> web.Response:
        filters = {k: v for k in FILTERS if (v := request.query.get(k, ""))}
        return _json([i for i in self.state.feed if matches(i, filters)][-500:])


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers.setdefault(
        "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'"
    )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    return resp


def _sse(item: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(item) + b"\n\n"


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, content_type="text/html", status=status)


def _json(doc: object) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


class KafkaFeed:
    """Reads the output and input topics from ``history`` records back per partition, and hands
    batches to the console on its loop. It never commits: the console keeps no position."""

    KINDS: Final = (FINDINGS, REVOCATIONS, INTENTS, DECISIONS, DEADLETTER)

    def __init__(
        self,
        settings: Settings,
        console: Console,
        loop: asyncio.AbstractEventLoop,
        *,
        history: int = 2_000,
    ) -> None:
        self.settings = settings
        self.console = console
        self.loop = loop
        self.history = history
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self._kind = {settings.topic(k): k for k in self.KINDS}

    def start(self) -> None:
        self.thread.start()

    def _consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.settings,
                group_id=f"{self.settings.topic_prefix}console-{uuid.uuid4().hex[:8]}",
                client_id="tether-console",
                overrides={"isolation.level": "read_uncommitted", "enable.partition.eof": False},
            )
        )

    def _assign_new(self, c: Consumer, assigned: set[tuple[str, int]]) -> None:
        """Assign every partition of the console's topics not assigned yet, from ``history``
        records back: topics created after the console started (or new partitions) join."""
        meta = c.list_topics(timeout=10).topics
        tps = []
        for topic in self._kind:
            if topic not in meta or meta[topic].error is not None:
                continue
            for p in meta[topic].partitions:
                if (topic, p) in assigned:
                    continue
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                tps.append(TopicPartition(topic, p, max(low, high - self.history)))
                assigned.add((topic, p))
        if tps:
            c.incremental_assign(tps)

    def _run(self) -> None:
        c = self._consumer()
        assigned: set[tuple[str, int]] = set()
        looked = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() - looked > RESCAN_S:
                    looked = time.monotonic()
                    try:
                        self._assign_new(c, assigned)
                    except KafkaException as exc:
                        log.warning("console: cannot list topics yet: %s", exc)
                if not assigned:
                    self.stop.wait(0.5)
                    continue
                msgs = c.consume(1000, 0.2)
                batch: list[tuple[str, bytes | None, bytes]] = []
                for m in msgs:
                    value = m.value()
                    topic = m.topic()
                    if m.error() is None and value and topic in self._kind:
                        batch.append((self._kind[topic], m.key(), value))
                if batch:
                    with contextlib.suppress(RuntimeError):  # the loop closed: shutting down
                        self.loop.call_soon_threadsafe(self.console.ingest, batch)
        finally:
            c.close()


async def serve(
    settings: Settings,
    token: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    history: int = 2_000,
    started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the console until ``stop`` is set (or forever)."""
    console = Console(token)
    feed = KafkaFeed(settings, console, asyncio.get_running_loop(), history=history)
    feed.start()
    runner = web.AppRunner(console.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None else port
    if started is not None:
        started(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        feed.stop.set()
        await runner.cleanup()


class LocalConsole:
    """The console on a thread of its own, fed in process (``tether demo --console``): no Kafka.

    ``tap(kind, value)`` takes one record as the pipeline would publish it (``intents``,
    ``findings``, ``revocations``, ``decisions``, ``deadletter``); records are batched onto the
    console's loop.
    """

    def __init__(self, token: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.console = Console(token)
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._serve, name="console", daemon=True)

    def start(self) -> int:
        """Start serving; the bound port."""
        self.thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the console did not start")
        return self.port

    def tap(self, kind: str, value: bytes) -> None:
        """Hand one record to the console (thread-safe)."""
        batch: list[tuple[str, bytes | None, bytes]] = [(kind, None, value)]
        self.loop.call_soon_threadsafe(self.console.ingest, batch)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.console.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
