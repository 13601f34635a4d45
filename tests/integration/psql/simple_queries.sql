-- Simple-protocol queries: several statements in one Query message (\;),
-- an error in the middle of such a message, NULLs, unicode, large values.
\pset null '(null)'
SELECT 1 AS one, 'two' AS two, NULL::int AS nothing;
SELECT 1 AS first \; SELECT 2 AS second \; SELECT 3 AS third;
-- the error stops the rest of the same Query message; the next one runs
SELECT 'before' AS a \; SELECT 1/0 \; SELECT 'never' AS b;
SELECT 'after the error' AS c;
SELECT * FROM (VALUES (1, NULL, 'x'), (NULL, 2.5, NULL), (3, NULL, '')) AS t(a, b, c);
SELECT 'grüße' AS german, 'Ελληνικά' AS greek, '日本語テキスト' AS japanese, '😀👍' AS emoji;
SELECT length('😀👍'), octet_length('😀👍'), upper('ßtraße'), 'ünïcödé' ILIKE 'ÜNÏCÖDÉ' AS ilike;
SELECT chr(0x1F600) = '😀' AS same_emoji;
CREATE TEMP TABLE big_values (id int, body text, blob bytea);
INSERT INTO big_values SELECT g, repeat(chr(65 + g), 200000 * g), decode(repeat('00ff', 50000 * g), 'hex')
  FROM generate_series(1, 3) g;
SELECT id, length(body), md5(body), length(blob), md5(blob) FROM big_values ORDER BY id;
-- a 20 kB value printed in full
SELECT repeat('0123456789', 2000) AS twenty_kb;
SELECT string_agg(g::text, ',') FROM generate_series(1, 3000) g;
SELECT count(*), sum(length(r)) FROM (SELECT repeat('r', 1000) AS r FROM generate_series(1, 50000)) s;
SELECT ARRAY[1, NULL, 3] AS arr, '{"a": [1, 2, {"b": null}]}'::jsonb AS doc, ROW(1, 'x') AS rec;
SELECT 1.5::numeric(10, 3), 1e300::float8, '-infinity'::float8, 'NaN'::numeric, 9223372036854775807::int8;
SELECT '2024-02-29 13:14:15.123456+00'::timestamptz AT TIME ZONE 'UTC', interval '1 year 2 mons 3 days 04:05:06';
\x on
SELECT 'expanded' AS mode, NULL AS n, E'multi\nline' AS text;
\x off
SELECT '' AS empty_string, ' ' AS space, E'tab\there' AS tab;
-- empty query and comment-only statements
;
SELECT 'end' AS last;
