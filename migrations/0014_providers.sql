-- Credential providers (issue 14; the original's `providers`): where an upstream credential comes
-- from, referenced by resources as `credential_provider_id`. The public part of the configuration
-- is `config_json`; the secret part (an API key, later client secrets) is sealed with ZONE_KEK,
-- bound to the zone and the provider (`caracal/provider/<zone>/<id>`), and never read back: only
-- the names of its keys are shown. Soft-deleted like every catalog row.

CREATE TABLE providers (
    zone_id            text NOT NULL REFERENCES zones (id),
    id                 text NOT NULL,
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    identifier         text NOT NULL CHECK (length(identifier) BETWEEN 1 AND 512),
    kind               text NOT NULL CHECK (kind IN ('none', 'api_key', 'bearer_token', 'http_basic', 'oauth2_client_credentials')),
    config_json        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config_json) = 'object'),
    secret_config_keys text[] NOT NULL DEFAULT '{}',
    secret_config      bytea NULL,
    secret_kek_id      text NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    archived_at        timestamptz,
    PRIMARY KEY (zone_id, id)
);
CREATE UNIQUE INDEX providers_live_identifier ON providers (zone_id, identifier) WHERE archived_at IS NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON providers TO caracal_control;
ALTER TABLE providers ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON providers TO caracal_control
    USING (caracal_zone_visible(zone_id)) WITH CHECK (caracal_zone_visible(zone_id));

ALTER TABLE resources
    ADD COLUMN credential_provider_id text NULL,
    ADD CONSTRAINT resources_credential_provider FOREIGN KEY (zone_id, credential_provider_id) REFERENCES providers (zone_id, id);

-- `provider`: the credential comes from the referenced provider.
ALTER TABLE resources DROP CONSTRAINT resources_credential_mode_check;
ALTER TABLE resources ADD CONSTRAINT resources_credential_mode_check
    CHECK (credential_mode IN ('none', 'caracal_jwt', 'provider_apikey', 'provider'));
ALTER TABLE resources ADD CONSTRAINT resources_provider_reference
    CHECK ((credential_mode = 'provider') = (credential_provider_id IS NOT NULL));
