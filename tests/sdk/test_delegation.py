"""Delegation through the SDK: `Authority.narrow` and nested sessions that inherit its edge, a retried
`delegate()`, `accept_delegation(validate=True)` by another application, and a revoked delegation seen
by `caracalai_verify` through our signed revocation stream."""


import harness
import redis
from caracalai import Authority, CoordinatorError
from caracalai.advanced import DelegationRequest, create_delegation
from caracalai_revocation_redis import RedisRevocationConsumer, RedisRevocationStore
from caracalai_verify import authenticate
from harness import APP, APP2, CP, RES, SECRET2, STREAMS_KEY, VERIFY_RES, ZONE, calls, client


async def test_narrowed_sessions_and_nested_sessions_inherit_the_edge():
    c = client()
    async with c.session() as parent:
        narrow = Authority.narrow(["tools.read"], ttl_seconds=120, resource_id=RES)
        async with c.session(authority=narrow) as child:
            assert child.delegation_id and child.hop == parent.hop + 1, (child.delegation_id, child.hop)
            r = await c.fetch(RES, "/items/1", scopes=["tools.read"])
            assert r.status_code == 200, (r.status_code, r.text)
            async with c.session() as nested:  # inherit (the default): a copy of the child's edge onto it
                assert nested.delegation_id and nested.delegation_id != child.delegation_id, (nested.delegation_id, child.delegation_id)
                r = await c.fetch(RES, "/items/2", scopes=["tools.read"])
                assert r.status_code == 200, (r.status_code, r.text)
            async with c.session(authority=Authority.none()) as bare:
                assert bare.delegation_id is None
        # Widening is refused.
        try:
            async with c.session(authority=Authority.narrow(["tools.admin"], ttl_seconds=60, resource_id=RES)):
                pass
        except CoordinatorError as e:
            assert 400 <= e.status < 500, (e.status, e.code)
        else:
            raise AssertionError("a narrowing widened the authority")
    await c.aclose()


async def test_a_retried_delegate_creates_one_edge():
    c = client()
    ev = []
    c.on_event(ev.append)
    target = await c.start_session(heartbeat_interval=0)
    async with c.session() as src:
        tok = await c.config.asubject_token()
        req = DelegationRequest(
            zone_id=ZONE,
            issuer_application_id=APP,
            source_session_id=src.session_id,
            target_session_id=target.session_id,
            receiver_application_id=APP,
            scopes=["tools.read"],
            resource_id=RES,
            ttl_seconds=60,
            idempotency_key="deleg-retry-1",
        )
        first = await create_delegation(c.config.coordinator, tok, req)
        again = await create_delegation(c.config.coordinator, tok, req)
        assert first.delegation_id == again.delegation_id
        assert calls(ev, "POST", "/delegations")[-1].replayed
    await target.aclose()
    await c.aclose()


async def test_accept_delegation_validated_by_another_application():
    a, b = client(), client(APP2, SECRET2)
    hb = await b.start_session(heartbeat_interval=0)
    async with a.session():
        d = await a.delegate(to_session_id=hb.session_id, to_application_id=APP2, scopes=["tools.read"], ttl_seconds=120, resource_id=RES)
        assert d.delegation_id and tuple(d.scopes) == ("tools.read",)
        try:  # the receiver must be the target session's application
            await a.delegate(to_session_id=hb.session_id, to_application_id=APP, scopes=["tools.read"], ttl_seconds=60, resource_id=RES)
        except CoordinatorError as e:
            assert (e.status, e.code) == (409, "delegation_application_mismatch"), (e.status, e.code)
        else:
            raise AssertionError("a receiver mismatch was accepted")
        async with b.bind(hb.context):
            async with b.accept_delegation(d.delegation_id, validate=True) as rctx:
                assert rctx.delegation_id == d.delegation_id and rctx.hop == hb.context.hop + 1
                r = await b.fetch(RES, "/items/1", scopes=["tools.read"])
                assert r.status_code == 200, (r.status_code, r.text)
        await a.revoke_delegation(d.delegation_id)
        async with b.bind(hb.context):
            try:
                async with b.accept_delegation(d.delegation_id, validate=True):
                    pass
            except RuntimeError as e:
                assert "not live" in str(e), e
            else:
                raise AssertionError("a revoked delegation validated")
    await hb.aclose()
    await a.aclose()
    await b.aclose()


async def test_a_revoked_delegation_reaches_caracalai_verify_over_our_stream():
    """The upstream is a resource server built with the published verifier: it accepts the resource
    mandate the gateway forwards, and once the delegation is revoked — announced on our signed
    `caracal.sessions.revoke` stream, consumed by the published Redis consumer — refuses it."""
    r = redis.Redis.from_url(harness.REDIS_URL)
    store = RedisRevocationStore(r)
    consumer = RedisRevocationConsumer(r, store, consumer="sdk-e2e", stream_hmac_key=STREAMS_KEY, block_ms=100)
    consumer.ensure_group()
    seen = []
    with harness.recording_upstream(harness.VERIFY_PORT, seen):
        a, b = client(resources=[RES, VERIFY_RES]), client(APP2, SECRET2, resources=[RES, VERIFY_RES])
        hb = await b.start_session(heartbeat_interval=0)
        async with a.session():
            d = await a.delegate(to_session_id=hb.session_id, to_application_id=APP2, scopes=["tools.read"], ttl_seconds=120, resource_id=VERIFY_RES)
            async with b.bind(hb.context):
                async with b.accept_delegation(d.delegation_id):
                    resp = await b.fetch(VERIFY_RES, "/items/1", scopes=["tools.read"])
                    assert resp.status_code == 200, (resp.status_code, resp.text)
            token = seen[-1]["authorization"].removeprefix("Bearer ")
            check = lambda: authenticate(token, issuer=CP, audience=VERIFY_RES, required_scopes=["tools.read"], expected_zone_id=ZONE, revocations=store, require_delegation=True)
            before = await check()
            assert before.ok, before.error
            await a.revoke_delegation(d.delegation_id)

            def drained():
                consumer.poll_once()
                return store.is_revoked(d.delegation_id)

            await harness.eventually(drained, timeout=10)
            after = await check()
            assert not after.ok and after.error.code == "session_revoked", after.error
        await hb.aclose()
        await a.aclose()
        await b.aclose()


harness.main(globals())
