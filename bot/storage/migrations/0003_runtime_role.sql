-- Two database roles: migrations run as the owner of the tables (RUNBOOK_BOT_MIGRATION_URL, or the
-- embedded superuser); the bot runs as a runtime role (DATABASE_URL) that owns nothing, so it cannot
-- disable the audit triggers, TRUNCATE, or UPDATE/DELETE audit events (ALTER TABLE, TRUNCATE and
-- trigger changes need ownership or superuser).
--
-- The migrator calls runbook_bot_grant_runtime(role) after ALL migrations on every start, so tables
-- added by later migrations are covered without a migration of their own: every table of the schema
-- gets SELECT, INSERT, UPDATE, DELETE unless it is listed below with less. A later migration that adds
-- a table needing less (append-only evidence) adds a WHEN line here by replacing this function.
CREATE FUNCTION runbook_bot_grant_runtime(runtime name) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', pg_catalog.current_schema(), runtime);
    FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = pg_catalog.current_schema() AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %I FROM %I', t.relname, runtime);
        EXECUTE pg_catalog.format('GRANT %s ON TABLE %I TO %I', CASE t.relname
            WHEN 'audit_events' THEN 'SELECT, INSERT'          -- append only
            WHEN 'audit_head' THEN 'SELECT, UPDATE'            -- moved by the append (trigger: +1 only)
            WHEN 'runs' THEN 'SELECT, INSERT, UPDATE'          -- runs are never deleted
            WHEN 'approvals' THEN 'SELECT, INSERT'             -- decisions are never changed
            WHEN 'schema_migrations' THEN 'SELECT'
            ELSE 'SELECT, INSERT, UPDATE, DELETE' END, t.relname, runtime);
    END LOOP;
    EXECUTE pg_catalog.format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I',
                              pg_catalog.current_schema(), runtime);
END $$;
REVOKE ALL ON FUNCTION runbook_bot_grant_runtime(name) FROM PUBLIC;
