-- Applications as the original's admin client sees them (issue 14): how the application was
-- registered (`managed` by an operator; `dcr`, dynamic client registration, expires) and when it
-- expires (NULL: never). An expired application mints nothing, like an archived one.

ALTER TABLE applications
    ADD COLUMN registration_method text NOT NULL DEFAULT 'managed' CHECK (registration_method IN ('managed', 'dcr')),
    ADD COLUMN expires_at timestamptz NULL;
