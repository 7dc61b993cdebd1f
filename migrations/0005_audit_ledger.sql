-- Audit ledger (DESIGN §6, issue 6).
--
-- One hash chain per zone: `seq` counts from 1 without gaps, `content_sha256` is SHA-256 of the
-- event's canonical JSON (RFC 8785, stored verbatim in `event`), and `chain_hmac` links each row
-- to the previous one's `chain_hmac` under AUDIT_CHAIN_KEY, a key no producer holds. The columns
-- beside `event` are copies for searching; the sweeps check them against `event`.
--
-- The ledger is written through `caracal_audit_writer`, which may only INSERT and SELECT; the
-- triggers below refuse UPDATE, DELETE and TRUNCATE to everyone else too, except the retention
-- job's DELETE of a chain prefix, which records an anchor first.

-- A DBA may create the roles (and grant the writer role to the migrating login) beforehand; then
-- the migration needs no CREATEROLE.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'caracal_audit_writer') THEN
        CREATE ROLE caracal_audit_writer NOLOGIN NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- roles are cluster-wide: a concurrent migration of another database created it
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'caracal_audit_reader') THEN
        CREATE ROLE caracal_audit_reader NOLOGIN NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

-- The control plane's own login switches to the writer role for ledger writes.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'caracal_audit_writer', 'MEMBER') THEN
        EXECUTE format('GRANT caracal_audit_writer TO %I', current_user);
    END IF;
END $$;

CREATE TABLE audit_events (
    zone_id        text        NOT NULL,
    seq            bigint      NOT NULL CHECK (seq > 0),
    id             text        NOT NULL,
    event_type     text        NOT NULL,
    decision       text        NOT NULL,
    request_id     text        NOT NULL,
    session_id     text,
    occurred_at    timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    event          text        NOT NULL,
    content_sha256 bytea       NOT NULL CHECK (length(content_sha256) = 32),
    chain_hmac     bytea       NOT NULL CHECK (length(chain_hmac) = 32),
    producer_sig   text,
    PRIMARY KEY (zone_id, seq)
);
-- Idempotence: an event id is filed once, whatever its timestamp says.
CREATE UNIQUE INDEX audit_events_event_id ON audit_events (id);
CREATE INDEX audit_events_occurred ON audit_events (zone_id, occurred_at);
CREATE INDEX audit_events_request ON audit_events (zone_id, request_id);
CREATE INDEX audit_events_session ON audit_events (zone_id, session_id) WHERE session_id IS NOT NULL;

-- Where a chain may start other than at seq 1 (`retention`: rows up to `seq` were pruned and
-- `chain_hmac` was the last pruned row's), and heads seen by a sweep (`checkpoint`), so a
-- truncated tail is noticed even after a restart.
CREATE TABLE audit_anchors (
    zone_id    text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('retention', 'checkpoint')),
    seq        bigint      NOT NULL CHECK (seq > 0),
    chain_hmac bytea       NOT NULL CHECK (length(chain_hmac) = 32),
    -- HMAC under AUDIT_CHAIN_KEY: whoever can write this table cannot pass a deletion off as a cut.
    anchor_mac bytea       NOT NULL CHECK (length(anchor_mac) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_id, kind, seq)
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events'
       AND current_setting('caracal.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

REVOKE ALL ON audit_events, audit_anchors FROM PUBLIC;
GRANT SELECT, INSERT ON audit_events, audit_anchors TO caracal_audit_writer;
GRANT SELECT ON audit_events, audit_anchors TO caracal_audit_reader;
