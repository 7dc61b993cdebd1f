"""Subject federation with the published SDK against a real OpenID provider (panva/oidc-provider,
started by `tests/e2e/sdk.rs` over HTTPS with the test PKI): `federate_subject(id_token)` gives a
`use=session`, `sub_type=user` mandate whose `sid` is a new user authority record, a Coordinator
session starts for that subject, and every refusal carries its status and error code.

id_tokens are obtained without a browser through CIBA (poll mode): the provider approves every
backchannel request at once for the account named by `login_hint` (`tests/oidc/provider.mjs`)."""

import base64
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

import harness
from caracalai_oauth import AccessDenied as OAuthAccessDenied
from caracalai_oauth import OAuthClient, decode_jwt_payload
from harness import APP, CP, RES, SECRET, ZONE, client

ISSUER = os.environ["OIDC_ISSUER"]
AUDIENCE = os.environ["OIDC_CLIENT_ID"]
OP_SECRET = os.environ["OIDC_CLIENT_SECRET"]
TLS = ssl.create_default_context(cafile=os.environ["OIDC_CA_FILE"])
ADMIN = os.environ["ADMIN_TOKEN"]
ISSUER_ROW = os.environ["SUBJECT_ISSUER_ID"]
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"


def post_form(url: str, fields: dict, ctx=None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def id_token(login_hint: str, client_id: str = AUDIENCE) -> str:
    """An id_token from the provider, by CIBA: backchannel request, then poll the token endpoint."""
    creds = {"client_id": client_id, "client_secret": OP_SECRET}
    status, started = post_form(f"{ISSUER}/backchannel", creds | {"scope": "openid", "login_hint": login_hint}, TLS)
    assert status == 200, started
    deadline = time.monotonic() + 10
    while True:
        time.sleep(0.2)
        status, out = post_form(
            f"{ISSUER}/token",
            creds | {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": started["auth_req_id"]},
            TLS,
        )
        if status == 200:
            return out["id_token"]
        assert out.get("error") in ("authorization_pending", "slow_down") and time.monotonic() < deadline, out


def federate_raw(token: str, **extra) -> tuple[int, dict]:
    """The form the SDK sends (`exchanger.py`), plus `extra` fields."""
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "zone_id": ZONE,
        "application_id": APP,
        "client_secret": SECRET,
        "subject_token": token,
        "subject_token_type": ID_TOKEN_TYPE,
    } | extra
    return post_form(f"{CP}/oauth/2/token", form)


def assert_refused(answer: tuple[int, dict], status: int, code: str, needle: str) -> None:
    got, body = answer
    assert got == status and body.get("error") == code, answer
    assert needle in body.get("error_description", ""), answer


def test_federate_subject_gives_a_user_session_mandate():
    tok = id_token("alice@example.com")
    fs = client().federate_subject(tok)
    p = decode_jwt_payload(fs.token)
    assert fs.subject_authority_record_id == p["sid"] == p["root_sid"], (fs, p)
    assert p["use"] == "session" and p["sub_type"] == "user", p
    assert p["sub"] == "alice@example.com" and p["client_id"] == APP and p["zone_id"] == ZONE, p
    assert not p.get("scope") and not p.get("target"), "a federated session carries no scope and no target"
    assert p["exp"] - p["iat"] == 900 and 850 < fs.expires_in_seconds <= 900, (p, fs.expires_in_seconds)
    longest = decode_jwt_payload(client().federate_subject(id_token("alice@example.com"), ttl_seconds=3600).token)
    assert longest["exp"] - longest["iat"] == 3600, longest
    assert federate_raw(id_token("bob"), ttl_seconds="3601")[0] == 400, "60 min cap"


async def test_a_session_starts_for_the_federated_subject():
    c = client()
    fs = c.federate_subject(id_token("carol"))
    async with c.session(
        subject_authority_record_id=fs.subject_authority_record_id, subject_authority_record_token=fs.token
    ) as ctx:
        assert ctx.session_id, ctx
        assert ctx.subject_authority_record_id == fs.subject_authority_record_id, ctx
    # The Rust side checks the stored session's subject record (user, with its issuer).
    print(f"FEDERATED_SESSION {ctx.session_id} {fs.subject_authority_record_id}", flush=True)


def test_a_token_for_another_audience_is_refused():
    assert_refused(federate_raw(id_token("dave", client_id="other-audience")), 401, "invalid_token", "audience")


def test_an_expired_id_token_is_refused():
    tok = id_token("expired-erin")  # lives 1 s; this stack's leeway is 2 s
    time.sleep(4)
    assert_refused(federate_raw(tok), 401, "invalid_token", "expired")


def test_a_sub_in_the_reserved_namespace_is_refused():
    assert_refused(federate_raw(id_token("caracal:admin")), 401, "invalid_token", "reserved")


def test_extra_fields_are_refused():
    tok = id_token("frank")
    for extra in ({"scope": "tools.read"}, {"resource": "https://x"}, {"agent_session_id": "s"}, {"approval_id": "a"}):
        assert_refused(federate_raw(tok, **extra), 400, "invalid_token", "carries only the id_token")


def test_a_tampered_id_token_is_refused():
    head, body, sig = id_token("gina").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) | {"sub": "root"}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_refused(federate_raw(f"{head}.{forged}.{sig}"), 401, "invalid_token", "signature")


# Writes need the approval of the user the request acts for (`approver: subject`); reads pass.
SUBJECT_STEP_UP = """package caracal.authz
import rego.v1

default result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_rule_matched"}]}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["sessions"], "diagnostics": []} if input.action.use == "session"

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["reads"], "diagnostics": []} if {
	input.action.use != "session"
	not "tools.write" in input.context.requested_scopes
}

result := {"decision": "allow", "evaluation_status": "complete", "determining_policies": ["user-approves-writes"],
	"diagnostics": [{"step_up_required": {"type": "human_approval", "tiers": [{"tier": "writes", "approver": "subject", "ttl_seconds": 600}]}}]} if {
	input.action.use != "session"
	"tools.write" in input.context.requested_scopes
}
"""


def admin(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"{CP}{path}", method=method, data=json.dumps(body or {}).encode(),
                                 headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def gateway_mint(session: str, scope: str, **extra) -> tuple[int, dict]:
    return post_form(f"{CP}/oauth/2/token", {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "zone_id": ZONE, "application_id": APP,
        "client_secret": SECRET, "subject_token": session, "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "requested_token_type": "urn:caracal:token-type:gateway-mandate", "resource": RES, "scope": scope} | extra)


async def test_a_hold_reserved_for_the_subject_is_decided_by_that_user_with_decide_approval():
    status, ps = admin("POST", f"/v1/zones/{ZONE}/policy-sets", {"name": "user-approves-writes"})
    assert status == 201, ps
    status, v = admin("POST", f"/v1/zones/{ZONE}/policy-sets/{ps['id']}/versions", {"rego": SUBJECT_STEP_UP})
    assert status == 201, v
    assert admin("POST", f"/v1/zones/{ZONE}/policy-sets/{ps['id']}/activate", {"version_id": v["id"]})[0] == 202
    c = client()
    ivan = c.federate_subject(id_token("ivan")).token
    status, held = gateway_mint(ivan, "tools.write")
    assert status == 401 and held["error"] == "interaction_required", held
    approval, binding = held["approval_id"], held["binding"]
    # An operator cannot decide it; another user cannot; a wrong binding cannot.
    status, body = admin("POST", f"/v1/zones/{ZONE}/approvals/{approval}/approve", {})
    assert (status, body.get("error")) == (409, "approval_reserved_for_subject"), (status, body)
    oc = OAuthClient(CP, ZONE, APP)
    judy = c.federate_subject(id_token("judy")).token
    for token, bind, what in [(judy, binding, "another user"), (ivan, "0" * 64, "a wrong binding")]:
        try:
            await oc.decide_approval(subject_token=token, approval_id=approval, binding=bind, decision="approved")
        except OAuthAccessDenied:
            pass
        except Exception as e:  # noqa: BLE001 - the SDK maps 409 to its own type
            assert "binding" in str(e) or "409" in str(e), (what, e)
        else:
            raise AssertionError(f"{what} decided ivan's approval")
    # Ivan decides with his own session mandate; the held mint then goes through, once.
    await oc.decide_approval(subject_token=ivan, approval_id=approval, binding=binding, decision="approved", reason="yes, me")
    status, minted = gateway_mint(ivan, "tools.write", approval_id=approval)
    assert status == 200, minted
    assert decode_jwt_payload(minted["access_token"])["approval_id"] == approval
    # A mint acting for no user cannot open such a hold at all.
    app_session = c.config.subject_token
    status, body = gateway_mint(app_session, "tools.write")
    assert status == 403 and "acts for no user" in body.get("error_description", ""), body
    await oc.aclose()


def test_an_unknown_issuer_is_refused_once_the_issuer_is_deleted():
    tok = id_token("heidi")
    req = urllib.request.Request(
        f"{CP}/v1/zones/{ZONE}/subject-issuers/{ISSUER_ROW}", method="DELETE", headers={"authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
    assert_refused(federate_raw(tok), 401, "invalid_token", "not a subject issuer")


if __name__ == "__main__":
    harness.main(globals())
