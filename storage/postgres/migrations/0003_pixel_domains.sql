-- Sites that may send pixel events: each host belongs to one workspace (unique across all
-- workspaces, stored lowercased, no port), with the configuration /api/v1/pixel/config serves.
CREATE TABLE pixel_domains (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    host varchar(253) NOT NULL UNIQUE CHECK (host = lower(host) AND host <> ''),
    enabled boolean NOT NULL DEFAULT true,
    pageviews boolean NOT NULL DEFAULT true,
    events boolean NOT NULL DEFAULT true,
    sessions boolean NOT NULL DEFAULT true,
    sample_rate double precision NOT NULL DEFAULT 1.0 CHECK (sample_rate >= 0 AND sample_rate <= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pixel_domains_workspace_idx ON pixel_domains (workspace_id, id);
