-- Caracal control-plane state (DESIGN §6).
--
-- Every zone-owned table is keyed by (zone_id, id) and every foreign key between zone-owned rows
-- carries zone_id on both sides, so a row can never point into another zone. Ids are UUIDv7 text.
-- Secrets (admin tokens, client secrets) are stored as SHA-256 digests of 256-bit random strings;
-- signing keys are sealed with ZONE_KEK before they reach this database.

CREATE TABLE zones (
    id          text PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{1,120}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz
);

CREATE TABLE admin_tokens (
    id           text PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    token_sha256 bytea NOT NULL CHECK (length(token_sha256) = 32),
    scope        text NOT NULL CHECK (scope IN ('global', 'zone')),
    zone_id      text REFERENCES zones (id) ON DELETE CASCADE,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK ((scope = 'global') = (zone_id IS NULL))
);
CREATE UNIQUE INDEX admin_tokens_live_digest ON admin_tokens (token_sha256) WHERE revoked_at IS NULL;

CREATE TABLE applications (
    zone_id              text NOT NULL REFERENCES zones (id),
    id                   text NOT NULL,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    client_secret_sha256 bytea NOT NULL CHECK (length(client_secret_sha256) = 32),
    traits               text[] NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    archived_at          timestamptz,
    PRIMARY KEY (zone_id, id)
);
CREATE UNIQUE INDEX applications_live_name ON applications (zone_id, lower(name)) WHERE archived_at IS NULL;

CREATE TABLE resources (
    zone_id               text NOT NULL REFERENCES zones (id),
    id                    text NOT NULL,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    identifier            text NOT NULL CHECK (length(identifier) BETWEEN 1 AND 512),
    upstream_url          text NOT NULL,
    scopes                text[] NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 64),
    -- [{method, path, scope}]: what an enforced resource allows through the gateway.
    operations            jsonb NOT NULL DEFAULT '[]',
    operation_enforcement text NOT NULL DEFAULT 'enforced'
        CHECK (operation_enforcement IN ('enforced', 'transport_uniform')),
    credential_mode       text NOT NULL DEFAULT 'caracal_jwt' CHECK (credential_mode IN ('none', 'caracal_jwt')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    archived_at           timestamptz,
    PRIMARY KEY (zone_id, id)
);
CREATE UNIQUE INDEX resources_live_identifier ON resources (zone_id, identifier) WHERE archived_at IS NULL;

CREATE TABLE policy_sets (
    zone_id     text NOT NULL REFERENCES zones (id),
    id          text NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    PRIMARY KEY (zone_id, id)
);
CREATE UNIQUE INDEX policy_sets_live_name ON policy_sets (zone_id, name) WHERE archived_at IS NULL;

-- Versions are immutable: a policy change is a new version, and what a past decision evaluated
-- stays inspectable.
CREATE TABLE policy_set_versions (
    zone_id       text NOT NULL,
    id            text NOT NULL,
    policy_set_id text NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    rego          text NOT NULL,
    rego_sha256   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_id, id),
    UNIQUE (zone_id, policy_set_id, version),
    FOREIGN KEY (zone_id, policy_set_id) REFERENCES policy_sets (zone_id, id)
);

CREATE FUNCTION caracal_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER policy_set_versions_immutable
    BEFORE UPDATE OR DELETE ON policy_set_versions
    FOR EACH ROW EXECUTE FUNCTION caracal_reject_mutation();

-- At most one active policy version per zone. No row ⇒ the STS denies everything in the zone.
CREATE TABLE zone_active_policies (
    zone_id       text PRIMARY KEY REFERENCES zones (id),
    policy_set_id text NOT NULL,
    version_id    text NOT NULL,
    activated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (zone_id, policy_set_id) REFERENCES policy_sets (zone_id, id),
    FOREIGN KEY (zone_id, version_id) REFERENCES policy_set_versions (zone_id, id)
);

-- Zone signing keys (P-256, PKCS#8 sealed with ZONE_KEK). `seq` orders keys per zone; a key signs
-- only from `not_before` on, so verifiers that cache the JWKS see a key before any token uses it.
CREATE TABLE signing_keys (
    zone_id        text NOT NULL REFERENCES zones (id),
    kid            text NOT NULL,
    seq            bigint NOT NULL CHECK (seq >= 1),
    public_x       bytea NOT NULL CHECK (length(public_x) = 32),
    public_y       bytea NOT NULL CHECK (length(public_y) = 32),
    sealed_private bytea NOT NULL,
    kek_id         text NOT NULL,
    not_before     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zone_id, kid),
    UNIQUE (zone_id, seq)
);

-- Root sessions minted from client credentials (`use=session`). Derived mandates carry their
-- root's id as `root_sid`, so revoking a record here revokes everything minted from it.
CREATE TABLE authority_records (
    zone_id        text NOT NULL,
    id             text NOT NULL,
    session_type   text NOT NULL CHECK (session_type IN ('application', 'user')),
    subject_id     text NOT NULL,
    application_id text NOT NULL,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'expired')),
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text,
    PRIMARY KEY (zone_id, id),
    FOREIGN KEY (zone_id, application_id) REFERENCES applications (zone_id, id),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

-- Every revoked anchor, whatever its kind: the gateway's snapshot reads this one table.
CREATE TABLE revocations (
    zone_id     text NOT NULL REFERENCES zones (id),
    anchor_kind text NOT NULL CHECK (anchor_kind IN ('sid', 'agent_session_id', 'delegation_edge_id')),
    anchor_id   text NOT NULL,
    reason      text NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    -- After this, no mandate hanging from the anchor can still be valid.
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (zone_id, anchor_kind, anchor_id)
);
CREATE INDEX revocations_live ON revocations (expires_at);

-- Transactional outbox: written in the same transaction as the change it announces, relayed to
-- Redis streams (signed) by the control plane, retried with backoff until delivered.
CREATE TABLE outbox (
    id            text PRIMARY KEY,
    zone_id       text,
    stream        text NOT NULL,
    fields        jsonb NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    dispatched_at timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending ON outbox (available_at) WHERE dispatched_at IS NULL;
