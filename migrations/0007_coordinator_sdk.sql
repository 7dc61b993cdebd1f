-- Coordinator fields the published SDK reads and sends (issue 11).
--
-- * An agent session lives by its own lifetime (`ttl_seconds` for a task, the lease for a service,
--   under `AGENT_SESSION_MAX_SECONDS`), no longer by the mandate that started it; revoking that
--   mandate's root session still terminates it (cascade).
-- * A service session's lease has a generation: `POST …/lease` bumps it, and a heartbeat or a
--   terminate that presents an older one is fenced (409 `session_lease_fenced`).
-- * A child started with `parent_authority: inherit` receives an edge mirroring its parent's
--   inbound edge (`inherited`); such an edge hands the same authority one session further down
--   and does not count as a hop.
-- * Idempotent creates (sessions and edges) keep the digest of the request they answered, so a
--   replay with another body is told apart (409 `idempotency_key_conflict`).

ALTER TABLE agent_sessions
    ADD COLUMN metadata                   jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN ttl_seconds                integer CHECK (ttl_seconds BETWEEN 1 AND 86400),
    ADD COLUMN lease_generation           bigint NOT NULL DEFAULT 0 CHECK (lease_generation >= 0),
    ADD COLUMN last_heartbeat_at          timestamptz,
    ADD COLUMN depth                      integer NOT NULL DEFAULT 0 CHECK (depth >= 0),
    ADD COLUMN delegation_edge_id         text,
    ADD COLUMN idempotency_request_sha256 bytea;
UPDATE agent_sessions SET lease_generation = 1 WHERE lifecycle = 'service';
ALTER TABLE agent_sessions ADD CONSTRAINT agent_sessions_lease_generation CHECK ((lifecycle = 'service') = (lease_generation >= 1));

ALTER TABLE delegation_edges
    ADD COLUMN inherited                  boolean NOT NULL DEFAULT false,
    ADD COLUMN idempotency_key            text,
    ADD COLUMN idempotency_request_sha256 bytea;
CREATE UNIQUE INDEX delegation_edges_idempotency
    ON delegation_edges (zone_id, issuer_application_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
