-- Named policies with immutable content versions (the original's `policies`, issue 14), which
-- policy-set versions may be composed from (`manifest`: `[{policy_version_id}]`). A set version made
-- from a manifest keeps the manifest beside the Rego it evaluates.

CREATE TABLE policies (
    zone_id     text NOT NULL REFERENCES zones (id),
    id          text NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    PRIMARY KEY (zone_id, id)
);
CREATE UNIQUE INDEX policies_live_name ON policies (zone_id, lower(name)) WHERE archived_at IS NULL;

CREATE TABLE policy_versions (
    zone_id        text NOT NULL,
    id             text NOT NULL,
    policy_id      text NOT NULL,
    version        integer NOT NULL CHECK (version >= 1),
    content        text NOT NULL,
    content_sha256 text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_id, id),
    UNIQUE (zone_id, policy_id, version),
    FOREIGN KEY (zone_id, policy_id) REFERENCES policies (zone_id, id)
);
CREATE TRIGGER policy_versions_immutable
    BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION caracal_reject_mutation();

ALTER TABLE policy_set_versions ADD COLUMN manifest jsonb NULL CHECK (manifest IS NULL OR jsonb_typeof(manifest) = 'array');

GRANT SELECT, INSERT, UPDATE, DELETE ON policies, policy_versions TO caracal_control;
ALTER TABLE policies ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON policies TO caracal_control
    USING (caracal_zone_visible(zone_id)) WITH CHECK (caracal_zone_visible(zone_id));
ALTER TABLE policy_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON policy_versions TO caracal_control
    USING (caracal_zone_visible(zone_id)) WITH CHECK (caracal_zone_visible(zone_id));
