"""Client-secret mints as the SDK makes them: the lifecycle token (`scope=agent:lifecycle` for every
configured resource) and the bootstrap mandate. The zone's resource never declared
`agent:lifecycle`: like the original, the STS treats it as implied for a resource with an upstream."""

import harness
from caracalai import AccessDenied
from caracalai_oauth import AccessDenied as OAuthAccessDenied
from caracalai_oauth import ExchangeOptions, OAuthClient, decode_jwt_payload
from harness import APP, CP, RES, SECRET, ZONE, client


def test_lifecycle_token_is_a_session_mandate_with_agent_lifecycle():
    c = client()
    tok = c.config.subject_token
    p = decode_jwt_payload(tok)
    assert p["use"] == "session", p
    assert "agent:lifecycle" in p["scope"].split(), p
    assert p["iss"] == CP and p["zone_id"] == ZONE and p["client_id"] == APP, p
    assert c.config.subject_token == tok, "the SDK caches the lifecycle token"


def test_bootstrap_mandate_is_minted_and_cached():
    c = client()
    m1 = c.mint_mandate(RES, ["agent:lifecycle"])
    m2 = c.mint_mandate(RES, ["agent:lifecycle"])
    assert m1.token == m2.token and m1.expires_in_seconds > 60
    assert decode_jwt_payload(m1.token)["use"] == "session"


def test_a_wrong_secret_is_access_denied():
    bad = client(secret="cs_" + "0" * 43)
    try:
        bad.config.subject_token
    except AccessDenied as e:
        assert e.http_status == 401 and e.code == "access_denied", (e.http_status, e.code)
    else:
        raise AssertionError("a wrong secret minted a token")


async def test_oauth_client_caches_lifecycle_tokens():
    oc = OAuthClient(CP, ZONE, APP)
    o = ExchangeOptions(client_secret=SECRET, scopes=["agent:lifecycle"])
    t1 = await oc.exchange("", RES, o)
    t2 = await oc.exchange("", [RES], o)
    assert t1.token_type == "Bearer" and t1.expires_in > 0, t1
    assert t2.access_token == t1.access_token, "served from the client's cache"
    await oc.aclose()


async def test_a_direct_subject_token_exchange_is_refused_as_in_the_original():
    """The original answered 403 to a subject-token exchange that did not come from its gateway. A
    single-use gateway mandate handed to this client would be cached and replayed: refused."""
    session = await client().config.asubject_token()
    oc = OAuthClient(CP, ZONE, APP)
    try:
        await oc.exchange(session, RES, ExchangeOptions(client_secret=SECRET, scopes=["tools.read"]))
    except OAuthAccessDenied as e:
        assert (e.http_status, e.code) == (403, "access_denied"), (e.http_status, e.code)
    else:
        raise AssertionError("a published client was handed a single-use gateway mandate")
    await oc.aclose()


harness.main(globals())
