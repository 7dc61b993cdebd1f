-- Admin tokens may expire (issue 16): NULL never does. `last_used_at` (0001) is now kept, at most
-- once a minute per token.
ALTER TABLE admin_tokens ADD COLUMN expires_at timestamptz;
