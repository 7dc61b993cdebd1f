"""Agent sessions through the SDK's own calls: `session()` blocks (nested ones inherit), idempotent
starts, service sessions with heartbeats and lease fencing, `attach_session()` after a restart."""

import asyncio

import harness
from caracalai import CoordinatorError
from caracalai.advanced import StartSessionRequest, start_coordinator_session, terminate_session
from harness import APP, ZONE, calls, client


async def test_session_block_starts_and_terminates():
    c = client()
    ev = []
    c.on_event(ev.append)
    async with c.session(task="e2e", labels=["e2e"], ttl_seconds=300) as ctx:
        assert ctx.session_id and ctx.zone_id == ZONE and ctx.application_id == APP
        assert ctx.delegation_id is None and ctx.hop == 0
        sid = ctx.session_id
    starts, ends = calls(ev, "POST", "/agents"), calls(ev, "DELETE")
    assert [e.status for e in starts] == [201], [(e.status, e.code) for e in starts]
    assert len(ends) == 1 and ends[0].path.endswith(sid) and ends[0].status == 204
    await c.aclose()


async def test_nested_sessions_run_under_their_parent():
    c = client()
    ev = []
    c.on_event(ev.append)
    async with c.session() as parent:
        async with c.session() as child:
            assert child.session_id != parent.session_id
    assert all(e.ok for e in calls(ev)), [(e.method, e.path, e.status, e.code) for e in calls(ev)]
    await c.aclose()


async def test_a_repeated_start_replays_and_a_changed_one_conflicts():
    c = client()
    ev = []
    c.on_event(ev.append)
    tok = await c.config.asubject_token()
    key = "order-42-" + "x" * 240  # 249 bytes: the SDK allows keys up to 255
    req = StartSessionRequest(zone_id=ZONE, application_id=APP, ttl_seconds=120, idempotency_key=key)
    a = await start_coordinator_session(c.config.coordinator, tok, req)
    b = await start_coordinator_session(c.config.coordinator, tok, req)
    assert a.session_id == b.session_id
    assert ev[-1].replayed and ev[-1].status == 201, (ev[-1].replayed, ev[-1].status)
    changed = StartSessionRequest(zone_id=ZONE, application_id=APP, ttl_seconds=999, idempotency_key=key)
    try:
        await start_coordinator_session(c.config.coordinator, tok, changed)
    except CoordinatorError as e:
        assert (e.status, e.code) == (409, "idempotency_key_conflict"), (e.status, e.code)
    else:
        raise AssertionError("a changed request was replayed")
    await terminate_session(c.config.coordinator, tok, ZONE, a.session_id)
    await c.aclose()


async def test_service_session_heartbeats_and_closes():
    c = client()
    ev = []
    c.on_event(ev.append)
    h = await c.start_session(heartbeat_interval=0)
    assert h.session_id and h.lease_generation >= 1 and h.status == "active", (h.lease_generation, h.status)
    assert h.heartbeat_deadline_at
    before = h.heartbeat_deadline_at
    await asyncio.sleep(1.1)
    await h.heartbeat()
    assert h.status == "active" and h.heartbeat_deadline_at > before, (before, h.heartbeat_deadline_at)
    await h.aclose()
    assert calls(ev, "DELETE")[-1].status == 204
    # The automatic loop renews on its own.
    h = await c.start_session(heartbeat_interval=0.5)
    await asyncio.sleep(2.0)
    beats = [e for e in calls(ev, "POST", "/heartbeat") if e.ok]
    assert len(beats) >= 2, [(e.status, e.code) for e in calls(ev, "POST", "/heartbeat")]
    await h.aclose()
    await c.aclose()


async def test_a_session_terminated_elsewhere_reports_its_lease_lost_once():
    c = client()
    lost = []
    h = await c.start_session(heartbeat_interval=0.3, on_lease_lost=lost.append)
    tok = await c.config.asubject_token()
    await terminate_session(c.config.coordinator, tok, ZONE, h.session_id, lease_generation=h.lease_generation)
    await harness.eventually(lambda: lost, timeout=5)
    await asyncio.sleep(1.0)
    assert len(lost) == 1 and lost[0].status in (404, 409), [(getattr(x, "status", None), getattr(x, "code", None)) for x in lost]
    await h.aclose()  # gone: no error
    await c.aclose()


async def test_attach_after_a_restart_fences_the_old_holder():
    c1 = client()
    h1 = await c1.start_session(heartbeat_interval=0)
    sid, gen1 = h1.session_id, h1.lease_generation
    c2 = client()  # the restarted process
    h2 = await c2.attach_session(sid, heartbeat_interval=0)
    assert h2.session_id == sid and h2.lease_generation > gen1 and h2.status == "active"
    try:
        await h1.heartbeat()
    except CoordinatorError as e:
        assert (e.status, e.code) == (409, "session_lease_fenced"), (e.status, e.code)
    else:
        raise AssertionError("the old holder was not fenced")
    await h1.aclose()  # fenced: counts as gone, the session survives for the new holder
    await h2.heartbeat()
    await h2.aclose()
    try:
        await c2.attach_session(sid)
    except CoordinatorError as e:
        assert e.status in (404, 409), (e.status, e.code)
    else:
        raise AssertionError("attached to a terminated session")
    await c1.aclose()
    await c2.aclose()


harness.main(globals())
