-- Seed data for the example: :users users in each of :projects projects
-- (psql variables; defaults 1000 and 3), with variables, transactions,
-- workflow versions and executions. Deterministic (no random()).
\if :{?users}
\else
  \set users 1000
\endif
\if :{?projects}
\else
  \set projects 3
\endif

TRUNCATE users, user_variables, transactions, workflow_versions, workflow_executions RESTART IDENTITY;

INSERT INTO users (id, project_id, username, balance, level, referrals)
SELECT u, p, 'user' || u, (u * 37 % 1000)::numeric / 10, 1 + u % 20, u % 7
FROM generate_series(1, :users) AS u, generate_series(1, :projects) AS p;

INSERT INTO user_variables (user_id, project_id, key, value)
SELECT u, p, k, k || '-' || u
FROM generate_series(1, :users) AS u, generate_series(1, :projects) AS p,
     unnest(ARRAY['language', 'step', 'city', 'plan']) AS k;

INSERT INTO transactions (user_id, project_id, amount, kind, created_at)
SELECT u, p, ((u * 13 + t * 7) % 500)::numeric / 10, CASE WHEN t % 3 = 0 THEN 'debit' ELSE 'credit' END,
       timestamptz '2026-01-01' + (t || ' hours')::interval
FROM generate_series(1, :users) AS u, generate_series(1, :projects) AS p, generate_series(1, 10) AS t;

INSERT INTO workflow_versions (project_id, version, definition, is_active, published_at)
SELECT p, v, jsonb_build_object('steps', v * 3, 'entry', 'start'), v = 3, timestamptz '2026-01-01' + (v || ' days')::interval
FROM generate_series(1, :projects) AS p, generate_series(1, 3) AS v;

INSERT INTO workflow_executions (project_id, chat_id, workflow_version_id, status, wait_type, state)
SELECT p, u, (p - 1) * 3 + 3, CASE WHEN u % 4 = 0 THEN 'waiting' ELSE 'done' END,
       CASE WHEN u % 4 = 0 THEN 'message' END, jsonb_build_object('node', u % 5)
FROM generate_series(1, :users) AS u, generate_series(1, :projects) AS p;

ANALYZE;
