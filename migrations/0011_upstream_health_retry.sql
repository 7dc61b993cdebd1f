-- Pool upkeep (docs/pools.md §4, §5, §7): active health probes of the endpoints, retries on another
-- endpoint, per-endpoint connection settings. `health` NULL ⇒ no probes (passive ejection only);
-- `{}` in `retry` / `connections` ⇒ their defaults (two attempts, no retry of a 502/503 answer; no
-- concurrency cap, HTTP/1.1). The table's grants and zone row-level security policy (0006) cover
-- the new columns; nothing else to grant.

ALTER TABLE resources
    ADD COLUMN health jsonb NULL CHECK (health IS NULL OR jsonb_typeof(health) = 'object'),
    ADD COLUMN retry jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(retry) = 'object'),
    ADD COLUMN connections jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(connections) = 'object');
