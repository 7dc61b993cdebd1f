-- Provider credentials: a resource may have the gateway inject a provider API key (in a header or
-- a query parameter) instead of, or beside, the resource mandate. The key is sealed with ZONE_KEK
-- (AES-256-GCM, associated data naming zone and resource) and never returned by the API.

ALTER TABLE resources DROP CONSTRAINT resources_credential_mode_check;
ALTER TABLE resources ADD CONSTRAINT resources_credential_mode_check
    CHECK (credential_mode IN ('none', 'caracal_jwt', 'provider_apikey'));

-- {location: header|query, header, scheme, query_param, forward_caracal_identity}
ALTER TABLE resources ADD COLUMN credential_placement jsonb NOT NULL DEFAULT '{}';
ALTER TABLE resources ADD COLUMN credential_secret bytea;
ALTER TABLE resources ADD COLUMN credential_kek_id text;
ALTER TABLE resources ADD CONSTRAINT resources_provider_secret
    CHECK (credential_mode <> 'provider_apikey' OR (credential_secret IS NOT NULL AND credential_kek_id IS NOT NULL));
