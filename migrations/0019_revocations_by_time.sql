-- Incremental revocation reloads (the STS every few seconds, the gateway's snapshot) read the rows
-- revoked since the newest they saw: an index range, not a scan of every live revocation (bench C1,
-- a million rows).
CREATE INDEX revocations_revoked_at ON revocations (revoked_at);
