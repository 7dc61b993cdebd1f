-- Dynamic client registration per zone (the original's `dcr_enabled`, issue 14): off by default; an
-- admin of the zone registers short-lived applications (`registration_method = 'dcr'`, at most an
-- hour) through `POST /v1/zones/{z}/applications/dcr` while it is on.

ALTER TABLE zones ADD COLUMN dcr_enabled boolean NOT NULL DEFAULT false;
