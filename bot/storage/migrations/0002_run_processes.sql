-- runbook-bot schema v2: where a running run's processes are, so whoever finds its worker gone can end them.
-- host: the host whose worker claimed the run (only that host can see, end and clean up its processes).
-- processes: {"boot_id", "owner": {"pid", "start"}, "group": {"kind", "marker", "cgroup", ...}}
--   (bot.execution.processes.RunProcesses.as_record; start = the owner's start time in clock ticks).
ALTER TABLE runs ADD COLUMN host text;
ALTER TABLE runs ADD COLUMN processes jsonb;
