"""The published admin client (`caracalai-admin`) provisioning the way operators' reconcilers do:
`ensure_application` creates a managed application with the traits asked for and seals a client
secret of the caller's choosing; run again, it converges the traits and rotates the secret (the old
one stops minting at once). `ensure_api_key_provider` seals an API key in a credential provider and
`ensure_resource` binds a resource to it; a governed request through the gateway then carries that
key to the upstream, and a rotation or a placement edit applies to the next request."""

import os
import secrets
import time

import harness
from caracalai import AccessDenied
from caracalai_admin import AdminApiError, AdminClient, ensure_application
from caracalai_oauth import decode_jwt_payload
from caracalai_admin import (
    GovernedUpstream,
    GovernedUpstreamGrant,
    GovernedUpstreamProvider,
    GovernedUpstreamResource,
    ensure_active_policy_set,
    ensure_api_key_provider,
    ensure_governed_upstreams,
    ensure_grants,
    ensure_resource,
)
from harness import CP, GW, VERIFY_PORT, ZONE, client

ADMIN = AdminClient(api_url=CP, admin_token=os.environ["ADMIN_TOKEN"])
NAME = "provisioned-agent"


def new_secret() -> str:
    return "cs_" + secrets.token_urlsafe(32)


def mints(app: str, secret: str) -> dict:
    """The claims of a session mandate minted with the published SDK."""
    return decode_jwt_payload(client(app=app, secret=secret).config.subject_token)


def refused(app: str, secret: str) -> bool:
    try:
        client(app=app, secret=secret).config.subject_token
    except AccessDenied as e:
        assert e.http_status == 401, e.http_status
        return True
    return False


FIRST = new_secret()
SECOND = new_secret()
STATE: dict = {}


def test_ensure_application_creates_a_managed_application_with_the_chosen_secret():
    app_id = ensure_application(ADMIN, ZONE, name=NAME, traits=["grant:tools"], client_secret=FIRST)
    row = ADMIN.applications.get(ZONE, app_id)
    assert row["name"] == NAME and row["registration_method"] == "managed" and row["expires_at"] is None, row
    assert row["traits"] == ["grant:tools"], row
    claims = mints(app_id, FIRST)
    assert claims["client_id"] == app_id and claims["use"] == "session", claims
    STATE["id"] = app_id


def test_ensure_application_again_converges_traits_and_rotates_the_secret():
    app_id = ensure_application(ADMIN, ZONE, name=NAME, traits=["grant:tools", "writer"], client_secret=SECOND)
    assert app_id == STATE["id"], "the same application, found by name"
    assert sorted(ADMIN.applications.get(ZONE, app_id)["traits"]) == ["grant:tools", "writer"]
    assert refused(app_id, FIRST), "the previous secret stops minting when the new one is sealed"
    assert mints(app_id, SECOND)["client_id"] == app_id
    same = [a for a in ADMIN.applications.list(ZONE) if a["name"] == NAME]
    assert len(same) == 1, same


def test_patch_refuses_what_the_original_refuses():
    app_id = STATE["id"]
    for body, code in [({}, "no_fields"), ({"client_secret": "short"}, "invalid_client_secret"), ({"owner": "x"}, None)]:
        try:
            ADMIN.applications.patch(ZONE, app_id, body)
        except AdminApiError as e:
            assert e.status == 400 and (code is None or e.code == code), (body, e.status, e.code)
        else:
            raise AssertionError(f"PATCH {body} was accepted")
    try:
        ADMIN.applications.create(ZONE, {"name": "x", "registration_method": "dcr"})
    except AdminApiError as e:
        assert e.status == 400, e.status
    else:
        raise AssertionError("a dcr application was created on the managed route")
    assert mints(app_id, SECOND)["client_id"] == app_id, "refused patches changed nothing"


WEATHER = "https://weather.e2e.test"


async def governed_get(path: str, resource: str = WEATHER, scopes: list | None = None, **who) -> dict:
    """One request through the gateway with the published SDK's transport (as `who`: app, secret);
    the headers the upstream saw."""
    seen: list = []
    with harness.recording_upstream(VERIFY_PORT, seen):
        async with client(resources=[resource], **who).application_transport(resource, scopes=scopes or ["tools.read"]) as http:
            r = await http.get(f"{GW}{path}")
            assert r.status_code == 200, (r.status_code, r.text)
    assert len(seen) == 1, seen
    return seen[0]


async def test_an_api_key_provider_is_sealed_bound_and_injected_by_the_gateway():
    placement = {"header": "X-Api-Key", "allowed_hosts": ["127.0.0.1"]}
    pid = ensure_api_key_provider(ADMIN, ZONE, name="weather", identifier="provider://weather", public_config=placement, api_key="wk-first-0001")
    row = ADMIN.providers.get(ZONE, pid)
    assert row["kind"] == "api_key" and row["secret_config_keys"] == ["api_key"], row
    assert "api_key" not in row["config_json"] and "wk-first" not in str(row), "the key is never shown"
    ops = [{"method": "GET", "path": "/**", "scope": "tools.read"}]
    upstream = f"http://127.0.0.1:{VERIFY_PORT}"
    res = ensure_resource(ADMIN, ZONE, name="weather", identifier=WEATHER, scopes=["tools.read"], upstream_url=upstream, credential_provider_id=pid, operations=ops)
    assert res["credential_provider_id"] == pid and res["credential_mode"] == "provider", res
    again = ensure_resource(ADMIN, ZONE, name="weather", identifier=WEATHER, scopes=["tools.read"], upstream_url=upstream, credential_provider_id=pid, operations=ops)
    assert again["updated_at"] == res["updated_at"], "no drift, no patch"
    seen = await governed_get("/forecast")
    assert seen.get("x-api-key") == "wk-first-0001", seen
    assert "authorization" not in seen, "only the provider's key reaches the upstream"

    # A new key: re-sealed, and the next request carries it.
    assert ensure_api_key_provider(ADMIN, ZONE, name="weather", identifier="provider://weather", public_config=placement, api_key="wk-second-0002") == pid
    assert (await governed_get("/forecast"))["x-api-key"] == "wk-second-0002"
    # A placement edit without the key keeps the sealed key.
    moved = {"header": "X-Weather-Key", "allowed_hosts": ["127.0.0.1"]}
    assert ensure_api_key_provider(ADMIN, ZONE, name="weather", identifier="provider://weather", public_config=moved) == pid
    seen = await governed_get("/forecast")
    assert seen.get("x-weather-key") == "wk-second-0002" and "x-api-key" not in seen, seen


def test_a_provider_is_bound_to_its_hosts_and_cannot_be_archived_while_in_use():
    pid = ensure_api_key_provider(ADMIN, ZONE, name="pinned", identifier="provider://pinned", public_config={"header": "X-Api-Key", "allowed_hosts": ["api.example.com"]}, api_key="pk-0001")
    try:
        ensure_resource(ADMIN, ZONE, name="elsewhere", identifier="https://elsewhere.e2e.test", scopes=["tools.read"], upstream_url=f"http://127.0.0.1:{VERIFY_PORT}", credential_provider_id=pid)
    except AdminApiError as e:
        assert e.status == 400 and "127.0.0.1" in str(e.body), (e.status, e.body)
    else:
        raise AssertionError("a provider's key was bound to a host it does not allow")
    used = next(p for p in ADMIN.providers.list(ZONE) if p["identifier"] == "provider://weather")
    try:
        ADMIN.providers.delete(ZONE, used["id"])
    except AdminApiError as e:
        assert e.status == 409 and e.code == "provider_in_use", (e.status, e.code)
    else:
        raise AssertionError("a provider in use was archived")
    for bad in [{"kind": "api_key", "config_json": {"header": "X-Api-Key"}}, {"kind": "warp", "config_json": {}}]:
        try:
            ADMIN.providers.create(ZONE, {"name": "bad", **bad})
        except AdminApiError as e:
            assert e.status == 400, (bad, e.status)
        else:
            raise AssertionError(f"{bad} was accepted")


ALLOW = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "policies", "allow-applications.rego")).read()


def active_version(set_name: str):
    return next(p for p in ADMIN.policy_sets.list(ZONE) if p["name"] == set_name).get("active_version_id")


def test_ensure_active_policy_set_adds_a_version_only_when_the_content_changes():
    ensure_active_policy_set(ADMIN, ZONE, policy_name="provisioned", set_name="provisioned", content=ALLOW)
    first = active_version("provisioned")
    assert first, "the set is active"
    policy = next(p for p in ADMIN.policies.list(ZONE) if p["name"] == "provisioned")
    assert len(ADMIN.policies.get(ZONE, policy["id"])["versions"]) == 1
    # The same content: nothing new, the same version stays active.
    ensure_active_policy_set(ADMIN, ZONE, policy_name="provisioned", set_name="provisioned", content=ALLOW)
    assert active_version("provisioned") == first
    assert len(ADMIN.policies.get(ZONE, policy["id"])["versions"]) == 1
    # Changed content: a new policy version, a new set version, activated — and it decides mints.
    ensure_active_policy_set(ADMIN, ZONE, policy_name="provisioned", set_name="provisioned", content=ALLOW + "\n# v2\n")
    assert active_version("provisioned") not in (None, first)
    assert len(ADMIN.policies.get(ZONE, policy["id"])["versions"]) == 2
    assert mints(STATE["id"], SECOND)["client_id"] == STATE["id"], "the provisioned policy allows"
    assert ADMIN.policies.validate(ALLOW)["valid"] is True
    assert ADMIN.policies.validate("package nope\nthis is not rego")["valid"] is False


def test_the_rest_of_the_clients_reads_answer():
    assert ADMIN.zones.dcr_status(ZONE) == {"id": ZONE, "dcr_enabled": False, "live_dcr_applications": 0}
    template = ADMIN.policy_templates.get("mcp-tools")
    assert "package caracal.authz" in template["content"], template
    audit = ADMIN.admin_audit.list(ZONE)
    assert audit and all(e["event"]["event_type"] == "admin_action" for e in audit), audit


def test_dcr_registers_short_lived_applications_only_while_enabled():
    try:
        ADMIN.applications.dcr(ZONE, {"name": "dcr-agent", "expires_in": 3})
    except AdminApiError as e:
        assert (e.status, e.code) == (403, "dcr_disabled"), (e.status, e.code)
    else:
        raise AssertionError("a DCR application was registered while DCR is off")
    assert ADMIN.zones.patch(ZONE, {"dcr_enabled": True})["dcr_enabled"] is True
    reg = ADMIN.applications.dcr(ZONE, {"name": "dcr-agent", "expires_in": 3})
    assert reg["registration_method"] == "dcr" and reg["expires_at"], reg
    assert mints(reg["id"], reg["client_secret"])["client_id"] == reg["id"]
    try:
        ADMIN.applications.rotate_secret(ZONE, reg["id"])
    except AdminApiError as e:
        assert (e.status, e.code) == (400, "client_secret_not_configured"), (e.status, e.code)
    else:
        raise AssertionError("a DCR application's secret was rotated; it expires instead")
    assert mints(reg["id"], reg["client_secret"])["client_id"] == reg["id"], "the secret it was given still works"
    assert ADMIN.zones.dcr_status(ZONE)["live_dcr_applications"] == 1
    try:
        ensure_application(ADMIN, ZONE, name="dcr-agent", traits=[], client_secret=new_secret())
    except RuntimeError as e:
        assert "not a usable managed credential" in str(e), e
    else:
        raise AssertionError("ensure_application bound a DCR application")
    # Off again with a live one: the operator must say what happens to it.
    try:
        ADMIN.zones.patch(ZONE, {"dcr_enabled": False})
    except AdminApiError as e:
        assert (e.status, e.code) == (409, "dcr_shutdown_required"), (e.status, e.code)
    else:
        raise AssertionError("DCR was switched off over a live application without a choice")
    second = ADMIN.applications.dcr(ZONE, {"name": "dcr-briefly", "expires_in": 2})
    time.sleep(3)
    assert refused(second["id"], second["client_secret"]), "an expired DCR application mints nothing"
    ADMIN.zones.patch(ZONE, {"dcr_enabled": False, "dcr_shutdown": "revoke_live"})
    assert refused(reg["id"], reg["client_secret"]), "revoke_live archived it"
    assert ADMIN.zones.dcr_status(ZONE) == {"id": ZONE, "dcr_enabled": False, "live_dcr_applications": 0}


async def test_sessions_list_shows_governed_sessions_with_their_subject():
    started = await client().start_session(heartbeat_interval=0)
    listed = ADMIN.sessions.list(ZONE)
    mine = [x for x in listed if x["agent_session_id"] == started.session_id]
    assert len(mine) == 1, listed
    assert mine[0]["application_id"] == harness.APP and mine[0]["status"] == "active", mine
    assert mine[0]["subject_id"] == harness.APP and mine[0]["federated_user_id"] is None, mine
    assert not [x for x in ADMIN.sessions.list(ZONE, {"application_id": harness.APP2}) if x["agent_session_id"] == started.session_id]


MAPS = "https://maps.e2e.test"


def mint_refused(resource: str, **who) -> bool:
    try:
        client(resources=[resource], **who).config.subject_token
    except AccessDenied as e:
        assert e.http_status == 403, e.http_status
        return True
    return False


async def test_ensure_governed_upstreams_declares_provider_resource_and_grants_in_one_call():
    app_id = STATE["id"]
    upstream = GovernedUpstream(
        provider=GovernedUpstreamProvider(name="maps", identifier="provider://maps", public_config={"header": "X-Maps-Key", "allowed_hosts": ["127.0.0.1"]}, api_key="mk-0001"),
        resource=GovernedUpstreamResource(name="maps", identifier=MAPS, scopes=["maps.read"], upstream_url=f"http://127.0.0.1:{VERIFY_PORT}", operation_enforcement="transport_uniform"),
        grants=[GovernedUpstreamGrant(application_id=app_id, scopes=["maps.read"])],
    )
    [result] = ensure_governed_upstreams(ADMIN, ZONE, upstreams=[upstream])
    assert result.resource["credential_provider_id"] == result.provider_id
    # The grant document is now the zone's policy: the granted application reaches the upstream with
    # the provider's key; one the document does not name gets no mandate.
    seen = await governed_get("/tiles", resource=MAPS, scopes=["maps.read"], app=app_id, secret=SECOND)
    assert seen.get("x-maps-key") == "mk-0001", seen
    assert mint_refused(MAPS), "the demo application holds no grant"
    # Converging to no grants revokes what is no longer granted.
    ensure_grants(ADMIN, ZONE, grants=[])
    assert mint_refused(MAPS, app=app_id, secret=SECOND)


harness.main(globals())
