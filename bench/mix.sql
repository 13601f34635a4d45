-- Read-only mix for the passthrough benchmark (run with -M extended and
-- -M prepared). One transaction = three statements: a point select, a
-- small ordered range scan and a two-table join, all on the pgbench schema.
-- :scale is passed by bench/passthrough.py (-D scale=N).
\set aid random(1, 100000 * :scale)
\set bid random(1, :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 50 ORDER BY aid DESC LIMIT 10;
SELECT b.bid, b.bbalance, t.tid, t.tbalance FROM pgbench_branches b JOIN pgbench_tellers t ON t.bid = b.bid WHERE b.bid = :bid ORDER BY t.tid;
