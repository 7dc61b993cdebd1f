-- Coordinator: agent sessions and the delegation graph (issue 5).
--
-- An agent session derives from a root session (authority record) and belongs to one
-- application. A delegation edge hands a subset of a source session's authority to a target
-- session (possibly of another application); an edge may itself derive from the edge its source
-- received (`parent_edge_id`), which is how authority travels more than one hop. Revoking a
-- root session terminates the agent sessions derived from it; terminating an agent session
-- revokes the edges it issued or received; revoking an edge revokes every edge derived from it.
-- Every revocation bumps the zone's graph epoch.

CREATE TABLE agent_sessions (
    zone_id                     text NOT NULL REFERENCES zones (id),
    id                          text NOT NULL,
    application_id              text NOT NULL,
    subject_authority_record_id text NOT NULL,
    parent_id                   text,
    status                      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'terminated')),
    lifecycle                   text NOT NULL CHECK (lifecycle IN ('task', 'service')),
    -- Task sessions end at expires_at; service sessions live while heartbeats arrive.
    expires_at                  timestamptz NOT NULL,
    heartbeat_interval_seconds  integer CHECK (heartbeat_interval_seconds BETWEEN 1 AND 3600),
    heartbeat_deadline_at       timestamptz,
    labels                      text[] NOT NULL DEFAULT '{}',
    idempotency_key             text,
    started_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    terminated_at               timestamptz,
    termination_reason          text,
    PRIMARY KEY (zone_id, id),
    FOREIGN KEY (zone_id, application_id) REFERENCES applications (zone_id, id),
    FOREIGN KEY (zone_id, subject_authority_record_id) REFERENCES authority_records (zone_id, id),
    FOREIGN KEY (zone_id, parent_id) REFERENCES agent_sessions (zone_id, id),
    CHECK ((lifecycle = 'service') = (heartbeat_interval_seconds IS NOT NULL)),
    CHECK ((status = 'terminated') = (terminated_at IS NOT NULL))
);
CREATE UNIQUE INDEX agent_sessions_idempotency ON agent_sessions (zone_id, application_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX agent_sessions_subject ON agent_sessions (zone_id, subject_authority_record_id);

CREATE TABLE delegation_edges (
    zone_id                 text NOT NULL REFERENCES zones (id),
    id                      text NOT NULL,
    source_session_id       text NOT NULL,
    target_session_id       text NOT NULL,
    parent_edge_id          text,
    issuer_application_id   text NOT NULL,
    receiver_application_id text NOT NULL,
    scopes                  text[] NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 64),
    -- Resource identifiers the edge covers; empty means "whatever the scopes reach".
    resources               text[] NOT NULL DEFAULT '{}',
    -- How many hops the authority may travel from the root edge (1 = no re-delegation).
    max_hops                integer NOT NULL CHECK (max_hops BETWEEN 1 AND 10),
    -- This edge's distance from the root edge (root edge = 1).
    hop                     integer NOT NULL CHECK (hop BETWEEN 1 AND 10),
    constraints             jsonb NOT NULL DEFAULT '{}',
    status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    expires_at              timestamptz NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    revoked_at              timestamptz,
    revoked_reason          text,
    PRIMARY KEY (zone_id, id),
    FOREIGN KEY (zone_id, source_session_id) REFERENCES agent_sessions (zone_id, id),
    FOREIGN KEY (zone_id, target_session_id) REFERENCES agent_sessions (zone_id, id),
    FOREIGN KEY (zone_id, parent_edge_id) REFERENCES delegation_edges (zone_id, id),
    FOREIGN KEY (zone_id, issuer_application_id) REFERENCES applications (zone_id, id),
    FOREIGN KEY (zone_id, receiver_application_id) REFERENCES applications (zone_id, id),
    CHECK (source_session_id <> target_session_id),
    CHECK (hop <= max_hops),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX delegation_edges_target ON delegation_edges (zone_id, target_session_id) WHERE status = 'active';
CREATE INDEX delegation_edges_parent ON delegation_edges (zone_id, parent_edge_id);

CREATE TABLE delegation_graph_epochs (
    zone_id text PRIMARY KEY REFERENCES zones (id),
    epoch   bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0)
);
