-- Step-up approvals (issue 5): human approval holds.
--
-- A policy can allow a mint on condition of a human approval (docs/policy.md, "Step-up"). The
-- STS then writes a hold bound to exactly what was asked (`binding`: SHA-256 over the resources,
-- scopes, principal, session, delegation and policy version) and answers 401
-- `interaction_required` with the hold's id. An operator decides it through the admin API; the
-- client retries with `approval_id`, and the approved hold is consumed by that one mint.
--
-- A pending or approved hold past `expires_at` reads as "expired" and can no longer be decided or
-- consumed; it is marked `expired` when a new hold for the same request replaces it.

CREATE TABLE step_up_approvals (
    zone_id             text NOT NULL REFERENCES zones (id),
    -- UUIDv4: the id is a capability for the status endpoint, so it must not be guessable.
    id                  text NOT NULL UNIQUE,
    application_id      text NOT NULL,
    principal           text NOT NULL,
    authority_record_id text,
    agent_session_id    text,
    delegation_edge_id  text,
    resources           text[] NOT NULL,
    scopes              text[] NOT NULL,
    policy_version_id   text,
    binding             text NOT NULL,
    approval_type       text NOT NULL DEFAULT 'human_approval' CHECK (approval_type = 'human_approval'),
    tier                text NOT NULL,
    approver            text NOT NULL CHECK (approver IN ('operator', 'any')),
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'rejected', 'consumed', 'expired')),
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    request_id          text,
    decided_at          timestamptz,
    decided_by          text,
    decision_reason     text,
    consumed_at         timestamptz,
    PRIMARY KEY (zone_id, id),
    FOREIGN KEY (zone_id, application_id) REFERENCES applications (zone_id, id),
    CHECK (state IN ('pending', 'expired') OR decided_at IS NOT NULL)
);

-- One live hold per request shape: asking again returns the same hold instead of a new one.
CREATE UNIQUE INDEX step_up_approvals_live ON step_up_approvals (zone_id, application_id, binding)
    WHERE state IN ('pending', 'approved');
CREATE INDEX step_up_approvals_by_state ON step_up_approvals (zone_id, state, created_at DESC, id DESC);
