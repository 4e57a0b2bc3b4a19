"""PostgreSQL storage (psycopg 3): migrations, runs, approvals, the audit chain, locks."""
