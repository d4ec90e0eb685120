-- SEO reports: one row per submitted audit of a URL, its four scores as columns (score history
-- for a URL is a range scan on (workspace_id, url, created_at)), and one row per issue found.
CREATE TABLE seo_reports (
    id bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url text NOT NULL,
    performance smallint NOT NULL CHECK (performance BETWEEN 0 AND 100),
    accessibility smallint NOT NULL CHECK (accessibility BETWEEN 0 AND 100),
    best_practices smallint NOT NULL CHECK (best_practices BETWEEN 0 AND 100),
    seo smallint NOT NULL CHECK (seo BETWEEN 0 AND 100),
    issue_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX seo_reports_workspace_idx ON seo_reports (workspace_id, id);
CREATE INDEX seo_reports_url_idx ON seo_reports (workspace_id, url, created_at);

-- url and workspace_id are copied from the report so the issue listing filters without a join.
CREATE TABLE seo_issues (
    id bigserial PRIMARY KEY,
    report_id bigint NOT NULL REFERENCES seo_reports (id) ON DELETE CASCADE,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url text NOT NULL,
    issue_type varchar(100) NOT NULL,
    severity text NOT NULL CHECK (severity IN ('critical', 'error', 'warning', 'info')),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX seo_issues_workspace_idx ON seo_issues (workspace_id, id);
CREATE INDEX seo_issues_report_idx ON seo_issues (report_id, id);
CREATE INDEX seo_issues_filter_idx ON seo_issues (workspace_id, severity, issue_type, created_at);
