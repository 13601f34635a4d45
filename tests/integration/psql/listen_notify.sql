-- LISTEN/NOTIFY: notifications (with and without payload) delivered to the
-- listening session, from itself and from another session, delivery at
-- COMMIT, none after ROLLBACK or UNLISTEN.
LISTEN chan_a;
LISTEN "Chan B";
NOTIFY chan_a;
NOTIFY chan_a, 'payload one';
SELECT pg_notify('Chan B', 'payload ünïcödé');
BEGIN;
NOTIFY chan_a, 'at commit';
SELECT 'inside the transaction, nothing delivered yet' AS status;
COMMIT;
BEGIN;
NOTIFY chan_a, 'rolled back';
ROLLBACK;
SELECT pg_notify('chan_a', repeat('p', 7000));
-- from another session (a second psql through the same endpoint)
\! psql -X -q -d "$PGSHELF_IT_DSN" -c "NOTIFY chan_a, 'from another session'"
SELECT 'after the other session' AS status;
UNLISTEN chan_a;
NOTIFY chan_a, 'not listening any more';
NOTIFY "Chan B", 'still listening';
UNLISTEN *;
NOTIFY "Chan B", 'nobody';
SELECT 'done' AS status;
