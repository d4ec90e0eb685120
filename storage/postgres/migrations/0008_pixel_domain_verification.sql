-- A host is no longer first come: several workspaces may claim one, each claim carries a
-- random token, and a claim becomes verified when the token is found in the host's DNS or on
-- the site (app/pixel/verification.py). At most one claim per host is verified at a time;
-- verifying takes the host from whoever held it (verification_lost_at records that on the
-- loser's row). Which claim serves an event is decided in app/pixel/sites.py.
-- Rows registered before this migration stay unverified: nothing proved their ownership.
ALTER TABLE pixel_domains DROP CONSTRAINT pixel_domains_host_key;
ALTER TABLE pixel_domains
    ADD COLUMN verification_token text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', ''),
    ADD COLUMN verified_at timestamptz,
    ADD COLUMN verification_method text CHECK (verification_method IN ('dns_txt', 'file', 'meta_tag')),
    ADD COLUMN verification_lost_at timestamptz,
    ADD CONSTRAINT pixel_domains_verified_has_method CHECK ((verified_at IS NULL) = (verification_method IS NULL));
CREATE UNIQUE INDEX pixel_domains_workspace_host_key ON pixel_domains (workspace_id, host);
CREATE UNIQUE INDEX pixel_domains_verified_host_key ON pixel_domains (host) WHERE verified_at IS NOT NULL;
-- The pixel's lookup: every claim on a host and its parents (host = ANY(...)).
CREATE INDEX pixel_domains_host_idx ON pixel_domains (host);
