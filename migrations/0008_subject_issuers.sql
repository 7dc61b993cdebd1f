-- Subject federation (docs/federation.md): the OpenID providers whose id_tokens a zone's
-- applications may exchange for a user session.
--
-- * One active row per (zone, issuer); a deleted row is archived, so sessions it federated live on.
-- * A federated user's authority record remembers the issuer that vouched for it (`claims_json`).

CREATE TABLE subject_issuers (
    zone_id     text NOT NULL REFERENCES zones (id),
    id          text NOT NULL,
    issuer      text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 2048),
    jwks_url    text NOT NULL CHECK (length(jwks_url) BETWEEN 1 AND 2048),
    audience    text NOT NULL CHECK (length(audience) BETWEEN 1 AND 512),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    PRIMARY KEY (zone_id, id)
);
CREATE UNIQUE INDEX subject_issuers_active ON subject_issuers (zone_id, issuer) WHERE archived_at IS NULL;

ALTER TABLE authority_records ADD COLUMN claims_json jsonb;

GRANT SELECT, INSERT, UPDATE, DELETE ON subject_issuers TO caracal_control;
ALTER TABLE subject_issuers ENABLE ROW LEVEL SECURITY;
CREATE POLICY caracal_zone ON subject_issuers TO caracal_control
    USING (caracal_zone_visible(zone_id)) WITH CHECK (caracal_zone_visible(zone_id));
