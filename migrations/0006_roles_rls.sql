-- Roles per service and zone row-level security (seed 000: least privilege, zone isolation in the
-- data layer as well as in the application).
--
-- * caracal_control — the control plane at run time (STS, admin API, Coordinator, relay): zone
--   tables under row-level security keyed on the per-connection setting `caracal.zone_id`, which the
--   control plane sets from the zone the current request or task acts for (`*` for work that spans
--   zones). No setting, no rows: a query that forgot its zone sees nothing.
-- * caracal_gateway — the gateway reads revocations and nothing else.
-- * caracal_audit_writer / caracal_audit_reader (0005) keep their own grants; row-level security
--   does not narrow the ledger, which files every zone.
--
-- Migrations keep running as the owner (the DATABASE_URL login), which row-level security does not
-- apply to; the control plane then runs `SET ROLE caracal_control` on every pooled connection. As in
-- 0005, a DBA may create the roles beforehand, so the migrating login needs no CREATEROLE.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'caracal_control') THEN
        CREATE ROLE caracal_control NOLOGIN NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- roles are cluster-wide: a concurrent migration of another database created it
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'caracal_gateway') THEN
        CREATE ROLE caracal_gateway NOLOGIN NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'caracal_control', 'MEMBER') THEN
        EXECUTE format('GRANT caracal_control TO %I', current_user);
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO caracal_control, caracal_gateway;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    zones, admin_tokens, applications, resources, policy_sets, policy_set_versions, zone_active_policies,
    signing_keys, authority_records, revocations, outbox, agent_sessions, delegation_edges,
    delegation_graph_epochs, step_up_approvals
TO caracal_control;
-- The admin API searches, exports and verifies the ledger; only the ledger's own role writes it.
GRANT SELECT ON audit_events, audit_anchors TO caracal_control;

GRANT SELECT ON revocations TO caracal_gateway;

-- `caracal.zone_id` names the zone whose rows are visible, `*` means every zone; unset or empty
-- means none.
CREATE FUNCTION caracal_zone_visible(zone text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT current_setting('caracal.zone_id', true) IN (zone, '*') $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'applications', 'resources', 'policy_sets', 'policy_set_versions', 'zone_active_policies',
        'signing_keys', 'authority_records', 'revocations', 'agent_sessions', 'delegation_edges',
        'delegation_graph_epochs', 'step_up_approvals', 'audit_events', 'audit_anchors'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY caracal_zone ON %I TO caracal_control USING (caracal_zone_visible(zone_id)) WITH CHECK (caracal_zone_visible(zone_id))',
            t);
    END LOOP;
END $$;

ALTER TABLE zones ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON zones TO caracal_control USING (caracal_zone_visible(id)) WITH CHECK (caracal_zone_visible(id));

-- Global admin tokens (no zone) are visible wherever a zone context is set; a zone's tokens only
-- in that zone (or `*`).
ALTER TABLE admin_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON admin_tokens TO caracal_control
    USING (CASE WHEN zone_id IS NULL THEN current_setting('caracal.zone_id', true) <> '' ELSE caracal_zone_visible(zone_id) END)
    WITH CHECK (CASE WHEN zone_id IS NULL THEN current_setting('caracal.zone_id', true) = '*' ELSE caracal_zone_visible(zone_id) END);

-- The outbox carries zone-less messages too (global evidence); the relay reads it under `*`.
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON outbox TO caracal_control
    USING (CASE WHEN zone_id IS NULL THEN current_setting('caracal.zone_id', true) <> '' ELSE caracal_zone_visible(zone_id) END)
    WITH CHECK (CASE WHEN zone_id IS NULL THEN current_setting('caracal.zone_id', true) <> '' ELSE caracal_zone_visible(zone_id) END);

-- Roles outside row-level security's purpose keep seeing what their grants allow.
CREATE POLICY caracal_gateway_reads ON revocations FOR SELECT TO caracal_gateway USING (true);
CREATE POLICY caracal_ledger ON audit_events TO caracal_audit_writer, caracal_audit_reader USING (true) WITH CHECK (true);
CREATE POLICY caracal_ledger ON audit_anchors TO caracal_audit_writer, caracal_audit_reader USING (true) WITH CHECK (true);
