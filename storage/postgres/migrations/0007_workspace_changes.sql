-- Every committed UPDATE or DELETE of a workspace, whoever runs it (the API, the CLI, an
-- operator in psql), is announced on channel sluice_workspaces with the workspace id as payload.
-- API processes cache workspace rows in memory and drop them when they hear of a change
-- (storage/postgres/workspace_cache.py). Postgres delivers the notification at commit.
CREATE OR REPLACE FUNCTION sluice_notify_workspace_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sluice_workspaces', OLD.id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS workspaces_changed ON workspaces;
CREATE TRIGGER workspaces_changed
    AFTER UPDATE OR DELETE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION sluice_notify_workspace_change();
