-- COPY FROM STDIN inline, COPY TO STDOUT in several formats, \copy from and
-- to files and a program, a COPY that fails half-way, then normal queries.
CREATE TEMP TABLE items (id int, name text, price numeric, note text);
COPY items FROM STDIN;
1	apple	1.25	\N
2	pear	0.5	with\ttab
3	cherry	10	ünïcödé 😀
\.
COPY items (id, name, price) FROM STDIN WITH (FORMAT csv, HEADER true);
id,name,price
4,"quoted, comma",4.5
5,"line
break",5
\.
COPY items TO STDOUT;
COPY (SELECT * FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true, FORCE_QUOTE *);
COPY (SELECT g, md5(g::text) FROM generate_series(1, 2000) g) TO STDOUT;
-- \copy through files in the working directory
\copy (SELECT * FROM items ORDER BY id) TO 'items.csv' WITH (FORMAT csv)
CREATE TEMP TABLE items_copy (LIKE items);
\copy items_copy FROM 'items.csv' WITH (FORMAT csv)
SELECT count(*) AS copied, bool_and(c IS NOT DISTINCT FROM i) AS identical
  FROM items i FULL JOIN items_copy c USING (id);
\copy items_copy (id, name) FROM PROGRAM 'seq 100 140 | sed s/$/,from-program/' WITH (FORMAT csv)
SELECT count(*), min(id), max(id) FROM items_copy WHERE name = 'from-program';
\copy (SELECT id, name FROM items_copy WHERE id > 135 ORDER BY id) TO STDOUT
-- a bad row aborts the COPY; the table is unchanged and the session goes on
COPY items FROM STDIN;
6	good	1	x
7	bad	not-a-number	x
\.
SELECT count(*) AS after_failed_copy FROM items;
BEGIN;
COPY items (id, name) FROM STDIN WITH (FORMAT csv);
8,in-transaction
\.
SELECT count(*) FROM items;
ROLLBACK;
SELECT count(*) AS after_rollback FROM items;
-- a larger COPY in
CREATE TEMP TABLE numbers (n int, t text);
\copy numbers FROM PROGRAM 'seq 1 100000 | sed "s/$/\tvalue/"'
SELECT count(*), sum(n), count(DISTINCT t) FROM numbers;
