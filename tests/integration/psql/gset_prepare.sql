-- \gset, \gexec and \gdesc (psql's describe of an unnamed statement), and
-- server-side prepared statements through PREPARE / EXECUTE / DEALLOCATE.
SELECT 42 AS answer, 'forty two' AS words \gset
\echo :answer :words
SELECT 7 AS n, NULL AS missing \gset p_
\echo :p_n
SELECT :answer + :p_n AS sum;
SELECT 'SELECT ' || g || ' * 11 AS x' FROM generate_series(1, 3) g \gexec
SELECT 1::int AS a, 'x'::text AS b, now() AS c, ARRAY[1.5]::numeric[] AS d \gdesc
SELECT relname, relkind, reltuples FROM pg_class WHERE false \gdesc
PREPARE add_one(int) AS SELECT $1 + 1 AS result;
EXECUTE add_one(41);
EXECUTE add_one(NULL);
PREPARE greet(text, int) AS SELECT repeat($1, $2) AS greeting;
EXECUTE greet('hé', 3);
SELECT name, statement, parameter_types FROM pg_prepared_statements ORDER BY name;
EXECUTE add_one('not a number');
EXECUTE no_such_statement;
PREPARE add_one(int) AS SELECT 1;
DEALLOCATE add_one;
EXECUTE add_one(1);
DEALLOCATE ALL;
SELECT count(*) AS prepared_left FROM pg_prepared_statements;
PREPARE ins(int) AS INSERT INTO pg_temp.log VALUES ($1);
CREATE TEMP TABLE log (v int);
PREPARE ins(int) AS INSERT INTO log VALUES ($1);
EXECUTE ins(1);
EXECUTE ins(2);
SELECT * FROM log ORDER BY v;
