-- Errors in the middle of a script (ON_ERROR_STOP=0), transactions that
-- fail and are rolled back, savepoints, and what psql shows of the error.
\set VERBOSITY verbose
CREATE TEMP TABLE accounts (id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0));
INSERT INTO accounts VALUES (1, 100), (2, 50);
SELECT * FROM missing_table;
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
INSERT INTO accounts VALUES (1, 1);
UPDATE accounts SET balance = balance - 80 WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
SELECT id, balance FROM accounts ORDER BY id;

BEGIN;
UPDATE accounts SET balance = balance + 10 WHERE id = 1;
SELECT 1/0;
-- the transaction is aborted: this fails with 25P02
SELECT balance FROM accounts WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT id, balance FROM accounts ORDER BY id;

BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE id = 1;
SAVEPOINT s1;
UPDATE accounts SET balance = -1 WHERE id = 1;
ROLLBACK TO SAVEPOINT s1;
UPDATE accounts SET balance = balance + 1 WHERE id = 2;
COMMIT;
SELECT id, balance FROM accounts ORDER BY id;

-- COMMIT of a failed transaction reports ROLLBACK
BEGIN;
INSERT INTO accounts VALUES (3, 3);
INSERT INTO accounts VALUES (3, 3);
COMMIT;
SELECT count(*) AS rows_after_failed_commit FROM accounts;

-- an error inside a multi-statement Query inside a transaction block
BEGIN \; INSERT INTO accounts VALUES (4, 4) \; SELECT 1/0 \; INSERT INTO accounts VALUES (5, 5);
ROLLBACK;
SELECT count(*) AS rows_after_rollback FROM accounts;

-- errors with detail, hint, position, constraint and custom SQLSTATE
SELECT 'abc'::int;
SELECT * FROM accounts WHERE nosuchcolumn = 1;
DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 42 USING ERRCODE = 'P0042', DETAIL = 'some detail', HINT = 'a hint'; END $$;
\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE
SELECT 'script still running' AS status;
