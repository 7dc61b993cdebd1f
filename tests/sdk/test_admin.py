"""The published admin client (`caracalai-admin`) provisioning an application the way operators'
reconcilers do: `ensure_application` creates a managed application with the traits asked for and
seals a client secret of the caller's choosing; run again, it converges the traits and rotates the
secret (the old one stops minting at once). The application then mints through the published SDK."""

import os
import secrets

import harness
from caracalai import AccessDenied
from caracalai_admin import AdminApiError, AdminClient, ensure_application
from caracalai_oauth import decode_jwt_payload
from harness import CP, ZONE, client

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


harness.main(globals())
