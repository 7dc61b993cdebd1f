-- Per-resource upstream deadlines (docs/pools.md §6): {connect_ms, response_header_ms, body_idle_ms},
-- each absent ⇒ the gateway's setting.

ALTER TABLE resources
    ADD COLUMN timeouts jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(timeouts) = 'object');
