"""Lifetimes the SDK relies on. The stack runs with `SESSION_TTL_SECONDS=20`, so every lifecycle and
bootstrap token lives 20 s: sessions created with such a token must live by what they asked for (or by
their heartbeats), never die with the token that created them."""

import asyncio
import time

import harness
from harness import RES, calls, client

RUN_SECONDS = 32  # longer than one lifecycle token (20 s) and one gateway mandate (pre-flight 35 s)


async def test_application_transport_keeps_working_past_its_tokens():
    c = client()
    ev = []
    c.on_event(ev.append)
    statuses = []
    started = time.monotonic()
    async with c.application_transport(RES, scopes=["tools.read"], mandate_ttl_seconds=60) as http:
        while time.monotonic() - started < RUN_SECONDS:
            r = await http.get(f"{harness.GW}/items/{len(statuses)}")
            statuses.append((round(time.monotonic() - started), r.status_code, r.text[:120] if r.status_code != 200 else ""))
            await asyncio.sleep(2)
    bad = [s for s in statuses if s[1] != 200]
    assert not bad, bad
    assert len(calls(ev, "POST", "/agents")) == 2, "one source and one target session, reused"
    await c.aclose()


async def test_a_heartbeating_service_session_outlives_its_creating_token():
    c = client()
    lost = []
    h = await c.start_session(heartbeat_interval=2.0, on_lease_lost=lost.append)
    await asyncio.sleep(RUN_SECONDS)
    assert not lost, [(getattr(x, "status", None), getattr(x, "code", None)) for x in lost]
    await h.heartbeat()
    assert h.status == "active"
    # Still usable: a delegation to it, presented by the session, passes the gateway.
    # Still usable: a delegation to it (the issuing session stays open meanwhile: ending it revokes
    # its edges), presented by the service session, passes the gateway.
    async with c.session():
        d = await c.delegate(to_session_id=h.session_id, scopes=["tools.read"], ttl_seconds=60, resource_id=RES)
        async with c.bind(h.context):
            async with c.accept_delegation(d.delegation_id):
                r = await c.fetch(RES, "/items/1", scopes=["tools.read"])
                assert r.status_code == 200, (r.status_code, r.text)
    await h.aclose()
    await c.aclose()


harness.main(globals())
