-- Upstream pools (docs/pools.md): a resource has a set of endpoints {url, weight} and a
-- load-balancing policy. `upstream_url` stays and always equals endpoints[0].url, so a reader that
-- predates pools still finds a usable upstream; an empty set (a row written by an older control
-- plane during an upgrade) means "the set of one upstream_url".

ALTER TABLE resources
    ADD COLUMN endpoints jsonb NOT NULL DEFAULT '[]'
        CHECK (jsonb_typeof(endpoints) = 'array' AND jsonb_array_length(endpoints) <= 32),
    ADD COLUMN load_balancing jsonb NOT NULL DEFAULT '{"policy": "round_robin"}'
        CHECK (jsonb_typeof(load_balancing) = 'object');

UPDATE resources SET endpoints = jsonb_build_array(jsonb_build_object('url', upstream_url, 'weight', 1));
