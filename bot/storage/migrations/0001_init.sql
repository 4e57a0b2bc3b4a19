-- runbook-bot schema v1. Plain SQL, applied once, recorded in schema_migrations.

CREATE TABLE runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    runbook            text        NOT NULL,
    state              text        NOT NULL CHECK (state IN (
                           'pending_approval', 'queued', 'running', 'succeeded', 'failed', 'timed_out',
                           'cancelled', 'interrupted', 'denied', 'expired')),
    params             jsonb       NOT NULL,   -- secret values replaced by HMACs
    requested_by       text        NOT NULL,
    reason             text        NOT NULL DEFAULT '',
    source             text        NOT NULL DEFAULT 'cli',
    plan               jsonb       NOT NULL,
    plan_hash          text        NOT NULL,
    lock_key           text,
    approvals_required integer     NOT NULL CHECK (approvals_required >= 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    queued_at          timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz,
    worker             text,
    heartbeat_at       timestamptz,
    cancel_requested   boolean     NOT NULL DEFAULT false,
    summary            jsonb       NOT NULL DEFAULT '[]',
    result             jsonb       NOT NULL DEFAULT '{}',
    error              text,
    notify             jsonb       NOT NULL DEFAULT '{}',   -- where front ends report (channel, thread)
    schedule_key       text UNIQUE                          -- (runbook, fire time) for scheduled runs
);

-- One active run per lock key: the lock is this index (taken at request, released by any final state).
CREATE UNIQUE INDEX runs_active_lock ON runs (lock_key)
    WHERE lock_key IS NOT NULL AND state IN ('pending_approval', 'queued', 'running');
CREATE INDEX runs_queued ON runs (id) WHERE state = 'queued';
CREATE INDEX runs_running ON runs (heartbeat_at) WHERE state = 'running';
CREATE INDEX runs_pending ON runs (expires_at) WHERE state = 'pending_approval';
CREATE INDEX runs_runbook ON runs (runbook, id DESC);

CREATE TABLE approvals (
    run_id    bigint      NOT NULL REFERENCES runs (id),
    approver  text        NOT NULL,
    decision  text        NOT NULL CHECK (decision IN ('approve', 'deny')),
    comment   text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, approver)
);

-- Secret parameter values, encrypted (Fernet) for the worker; deleted when the run ends.
CREATE TABLE run_secrets (
    run_id     bigint PRIMARY KEY REFERENCES runs (id),
    ciphertext bytea  NOT NULL
);

-- The audit trail: append-only, hash-chained. hash = sha256(prev_hash || canonical JSON of the event).
CREATE TABLE audit_events (
    seq       bigint      PRIMARY KEY,
    at        timestamptz NOT NULL,
    run_id    bigint,
    actor     text        NOT NULL,
    action    text        NOT NULL,
    body      jsonb       NOT NULL,
    prev_hash text        NOT NULL,
    hash      text        NOT NULL
);
CREATE INDEX audit_events_run ON audit_events (run_id, seq);

-- The chain head: one row, locked by every append, so appends are serialized and the chain never forks.
CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint  NOT NULL,
    hash text    NOT NULL
);
INSERT INTO audit_head VALUES (1, 0, repeat('0', 64));

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE FUNCTION audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' OR NEW.seq <> OLD.seq + 1 THEN
        RAISE EXCEPTION 'audit_head only moves forward one event at a time' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_head_guard BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only();

-- Leader-free scheduling: one row per (job, fire time); the first replica to insert it runs the job.
CREATE TABLE schedule_fires (
    job_id    text        NOT NULL,
    fire_time timestamptz NOT NULL,
    run_id    bigint REFERENCES runs (id),
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, fire_time)
);
