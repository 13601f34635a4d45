-- NoticeResponse relayed between results: RAISE at every level, notices
-- from utility statements, client_min_messages, notices mid-result.
DO $$ BEGIN RAISE NOTICE 'hello from DO'; END $$;
DO $$
BEGIN
  RAISE INFO 'info message';
  RAISE NOTICE 'notice % of %', 1, 2;
  RAISE WARNING 'warning with detail' USING DETAIL = 'the detail', HINT = 'the hint';
  RAISE LOG 'log level is not sent to the client by default';
END $$;
SET client_min_messages = debug1;
DO $$ BEGIN RAISE DEBUG 'debug now visible'; END $$;
SET client_min_messages = warning;
DO $$ BEGIN RAISE NOTICE 'suppressed'; RAISE WARNING 'still shown'; END $$;
RESET client_min_messages;
DROP TABLE IF EXISTS surely_not_there_table;
CREATE TEMP TABLE noisy (id int);
CREATE OR REPLACE FUNCTION pg_temp.shout(i int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'row %', i; RETURN i * 10; END $$;
SELECT pg_temp.shout(g) FROM generate_series(1, 5) g;
DO $$ BEGIN FOR i IN 1..200 LOOP RAISE NOTICE 'bulk notice %', i; END LOOP; END $$;
SELECT 'done' AS status;
