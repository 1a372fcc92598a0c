"""The console's pieces without a browser: sign-in, the live feed, escaping, bounds."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from tether.soc.console import COOKIE, Console, session_value
from tether.soc.console_state import MAX_TIMELINE, ConsoleState, matches
from tether.soc.console_svg import chain_svg

TOKEN = "unit-test-credential-0123456789"
EVIL = '<script>alert("x")</script>'


def finding(i: int, **kw: Any) -> dict[str, Any]:
    doc = {
        "kind": "finding",
        "finding_id": f"f-{i}",
        "code": "tool_not_granted",
        "severity": "medium",
        "workflow_id": "wf-1",
        "workload_id": "spiffe://acme.example/agent/x",
        "summary": "s",
        "event_time": "2026-12-06T00:00:01Z",
    }
    doc.update(kw)
    return doc


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_without_the_credential_everything_is_refused() -> None:
    async def go() -> None:
        async with TestClient(TestServer(Console(TOKEN).app())) as c:
            for path in ("/api/feed", "/events", "/api/health", "/api/workflow/wf-1"):
                assert (await c.get(path)).status == 401, path
            r = await c.get("/", allow_redirects=False)
            assert (r.status, r.headers["Location"]) == (302, "/login")
            c.session.cookie_jar.update_cookies({COOKIE: "forged"})
            assert (await c.get("/api/feed")).status == 401
            r = await c.post("/login", data={"token": "wrong"}, allow_redirects=False)
            assert r.status == 401
            r = await c.get("/api/feed", headers={"Authorization": f"Bearer {TOKEN}x"})
            assert r.status == 401

    run(go())


def test_signed_in_the_live_feed_streams_what_arrives() -> None:
    async def go() -> None:
        console = Console(TOKEN)
        async with TestClient(TestServer(console.app())) as c:
            r = await c.post("/login", data={"token": TOKEN}, allow_redirects=False)
            assert r.status == 302
            assert r.cookies[COOKIE].value == session_value(TOKEN)
            assert TOKEN not in r.headers.get("Set-Cookie", "")
            resp = await c.get("/events?severity=high")
            assert resp.status == 200
            await asyncio.sleep(0.05)
            console.ingest(
                [
                    ("findings", None, orjson.dumps(finding(1))),  # filtered out: medium
                    ("findings", None, orjson.dumps(finding(2, severity="high"))),
                    ("findings", None, b"not json"),  # counted, never fatal
                ]
            )
            line = b""
            while not line.startswith(b"data: "):
                line = await asyncio.wait_for(resp.content.readline(), 5)
            assert orjson.loads(line[6:])["finding_id"] == "f-2"
            assert console.state.counts["unreadable"] == 1
            resp.close()

    run(go())


def test_agent_chosen_text_is_escaped_everywhere() -> None:
    async def go() -> None:
        console = Console(TOKEN)
        console.ingest(
            [
                (
                    "intents",
                    None,
                    orjson.dumps(
                        {
                            "event_type": "delegation.granted",
                            "workflow_id": "wf-1",
                            "occurred_at": "2026-12-06T00:00:00Z",
                            "agent": {"workload_id": EVIL},
                            "delegation": {"delegation_id": EVIL, "to_workload_id": "b"},
                        }
                    ),
                ),
                ("findings", None, orjson.dumps(finding(1, summary=EVIL, workload_id=EVIL))),
            ]
        )
        async with TestClient(TestServer(console.app())) as c:
            page = await (
                await c.get("/workflow/wf-1", headers={"Authorization": f"Bearer {TOKEN}"})
            ).text()
            assert EVIL not in page
            assert "&lt;script&gt;" in page
            r = await c.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]

    run(go())


def test_timeline_is_in_event_time_and_bounded() -> None:
    st = ConsoleState()
    wf = st.workflow("wf-1")
    wf.add({"t": "2026-12-06T00:00:01Z", "what": "b"})
    wf.add({"t": "2026-12-06T00:00:00.500000Z", "what": "a"})
    assert [e["what"] for e in wf.ordered()] == ["a", "b"]
    for i in range(MAX_TIMELINE + 10):
        wf.add({"t": f"2026-12-06T00:01:{i % 60:02d}Z", "what": "x"})
    assert len(wf.timeline) == MAX_TIMELINE
    assert wf.dropped == 12


def test_a_delegation_loop_draws_and_ends() -> None:
    svg = chain_svg(
        "p",
        [
            {"id": "1", "from": "p", "to": "a"},
            {"id": "2", "from": "a", "to": "b"},
            {"id": "3", "from": "b", "to": "a"},
        ],
        {"b"},
    )
    assert svg.count('class="node') == 3
    assert svg.count("<line") == 3


def test_filters() -> None:
    f = finding(1, severity="high")
    assert matches(f, {"severity": "high", "workflow": "wf-1", "code": "tool_not_granted"})
    assert not matches(f, {"severity": "low"})
    assert matches(f, {"workload": "agent/x"})
    rev = {
        "kind": "revocation",
        "reason": "tool_not_granted",
        "severity": "high",
        "workflow_id": "wf-1",
        "target": {"kind": "token", "id": "tok"},
    }
    assert matches(rev, {"code": "tool_not_granted", "workload": "tok"})


def test_a_slow_browser_loses_its_own_oldest_items_and_is_told() -> None:
    from tether.soc import console as mod
    from tether.soc.console import Hub

    async def go() -> None:
        hub = Hub()
        sid, q = hub.subscribe({})
        for i in range(mod.QUEUE_MAX + 5):
            hub.publish(finding(i))
        assert q.qsize() == mod.QUEUE_MAX
        assert hub.gaps[sid] == 5
        assert (await q.get())["finding_id"] == "f-5"

    run(go())


def test_timeline_details_are_cut() -> None:
    st = ConsoleState()
    st.on_event(
        {
            "event_type": "tool_call.intent",
            "workflow_id": "wf-1",
            "occurred_at": "2026-12-06T00:00:00Z",
            "agent": {"workload_id": "a"},
            "action": {"tool": "t", "operation": "read", "resource": "r" * 10_000},
        }
    )
    assert len(st.workflows["wf-1"].timeline[0]["detail"]) <= 301


def test_revocation_latency_counts_whichever_arrives_first() -> None:
    st = ConsoleState(clock=lambda: 1000.0)
    rev = {
        "kind": "revocation",
        "finding_id": "f-1",
        "issued_at": "2026-12-06T00:00:01.250000Z",
        "workflow_id": "wf-1",
        "target": {"kind": "token", "id": "t"},
    }
    st.on_revocation(rev)  # before its finding, as a worker publishes them
    st.on_finding(finding(1, event_time="2026-12-06T00:00:01Z"))
    st.on_revocation({**rev, "target": {"kind": "workflow", "id": "wf-1"}})
    lat = st.health()["revocation_latency_s"]
    assert lat["count"] == 2
    assert lat["p50"] == 0.25
