-- Schema of the example chat-bot backend: per incoming message the bot reads
-- one user's variables and profile, a waiting workflow execution and the
-- project's active workflow version; writes are balance changes,
-- transactions, execution status changes and publishing a workflow.
CREATE TABLE IF NOT EXISTS users (
    id          bigint NOT NULL,
    project_id  bigint NOT NULL,
    username    text,
    balance     numeric(12, 2) NOT NULL DEFAULT 0,
    level       integer NOT NULL DEFAULT 1,
    referrals   integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, project_id)
);

CREATE TABLE IF NOT EXISTS user_variables (
    user_id     bigint NOT NULL,
    project_id  bigint NOT NULL,
    key         text NOT NULL,
    value       text,
    PRIMARY KEY (user_id, project_id, key)
);

CREATE TABLE IF NOT EXISTS transactions (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL,
    project_id  bigint NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    kind        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transactions_user_idx ON transactions (user_id, project_id);

CREATE TABLE IF NOT EXISTS workflow_versions (
    id           bigserial PRIMARY KEY,
    project_id   bigint NOT NULL,
    version      integer NOT NULL,
    definition   jsonb NOT NULL,
    is_active    boolean NOT NULL DEFAULT false,
    published_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS workflow_versions_active_idx ON workflow_versions (project_id) WHERE is_active;

CREATE TABLE IF NOT EXISTS workflow_executions (
    id                  bigserial PRIMARY KEY,
    project_id          bigint NOT NULL,
    chat_id             bigint NOT NULL,
    workflow_version_id bigint NOT NULL,
    status              text NOT NULL,
    wait_type           text,
    state               jsonb,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS workflow_executions_lookup_idx ON workflow_executions (project_id, chat_id, status);
