'use strict';
// postgres.js through a DSN given as argument; prints deterministic JSON.
// With max: 1 every query shares one connection, so the many concurrent
// sql`` calls are pipelined (Parse/Bind/Execute/Sync each, sent without
// waiting). Covers parameters, named prepared statements, a failing query
// amid the pipeline, transactions, cursors (Execute with a row limit),
// COPY out as a stream, notices, and query.cancel() (a CancelRequest).
const postgres = require('postgres');
const { waitFor, within, sleepingSql, run } = require('./common');

const APP = 'it_node_postgresjs';

function settle(results) {
  return results.map((r) => (r.status === 'fulfilled' ? r.value.map((row) => ({ ...row })) : { code: r.reason.code }));
}

run(async (dsn) => {
  const out = {};
  const notices = [];
  const sql = postgres(dsn, {
    max: 1,
    connection: { application_name: APP },
    onnotice: (notice) => notices.push(`${notice.severity}: ${notice.message}`),
  });
  const monitor = postgres(dsn, { max: 1, connection: { application_name: 'it_node_postgresjs_monitor' } });

  out.params = [...await sql`SELECT ${40}::int + ${2}::int AS sum, ${'ünï 😀'}::text AS t, ${null}::int AS n`];
  out.pipelined = (await Promise.all(
    Array.from({ length: 300 }, (_, i) => sql`SELECT ${i}::int AS i, md5(${String(i)}) AS h`)))
    .map((rows) => [rows[0].i, rows[0].h]);
  out.pipelineWithError = settle(await Promise.allSettled([
    sql`SELECT 1 AS a`, sql`SELECT 1/0 AS b`, sql`SELECT 3 AS c`, sql`SELECT * FROM missing_table`,
    sql`SELECT ${5}::int AS e`]));
  out.prepared = (await sql`SELECT count(*)::int AS n FROM pg_prepared_statements`)[0].n > 0;

  out.transaction = [...await sql.begin(async (tx) => {
    await tx`CREATE TEMP TABLE t (id int)`;
    await Promise.all([1, 2, 3].map((i) => tx`INSERT INTO t VALUES (${i})`));
    return tx`SELECT array_agg(id ORDER BY id) AS ids FROM t`;
  })];
  out.rolledBack = await sql.begin(async (tx) => {
    await tx`CREATE TEMP TABLE gone (id int)`;
    await tx`SELECT 1/0`;
  }).catch((error) => error.code);
  out.tableAfterRollback = (await sql`SELECT to_regclass('pg_temp.gone')::text AS t`)[0].t;

  out.cursorBatches = [];
  await sql`SELECT g FROM generate_series(1, 25) g`.cursor(10, (rows) => {
    out.cursorBatches.push(rows.map((r) => r.g));
  });
  const chunks = [];
  const stream = await sql`COPY (SELECT g, 'x' || g FROM generate_series(1, 1000) g) TO STDOUT`.readable();
  for await (const chunk of stream) chunks.push(chunk);
  out.copyOut = Buffer.concat(chunks).toString().split('\n').slice(-3);

  await sql`DO $$ BEGIN RAISE NOTICE 'postgres.js notice'; END $$`;
  out.notices = notices;

  const sleeping = sql`SELECT pg_sleep(30)`.execute();
  const finished = sleeping.then(() => 'completed', (error) => error.code);
  await waitFor('pg_sleep to run', async () => (await monitor.unsafe(sleepingSql(APP)))[0].n === 1);
  await sleeping.cancel();
  out.cancel = await within('the cancelled query', finished);
  out.afterCancel = [...await sql`SELECT 'usable' AS s`];

  await sql.end({ timeout: 5 });
  await monitor.end({ timeout: 5 });
  return out;
});
