'use strict';
// node-postgres (pg) through a DSN given as argument; prints deterministic JSON.
// Covers parameterised and named (prepared) queries, types, an error and
// recovery inside and outside a transaction, pipelined queries with an
// error amid them, notices,
// and a real cancel: Client#cancel opens a second connection and sends a
// CancelRequest with the BackendKeyData of the running query's client.
const pg = require('pg');
const { waitFor, within, sleepingSql, run } = require('./common');

const APP = 'it_node_pg';

async function catchCode(promise) {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    return { code: error.code, message: error.message };
  }
}

run(async (dsn) => {
  const out = {};
  const client = new pg.Client({ connectionString: dsn, application_name: APP });
  const monitor = new pg.Client({ connectionString: dsn, application_name: 'it_node_pg_monitor' });
  await client.connect();
  await monitor.connect();
  const notices = [];
  client.on('notice', (msg) => notices.push(`${msg.severity}: ${msg.message}`));

  out.params = (await client.query(
    'SELECT $1::int + $2::int AS sum, $3::text AS text, $4::bytea AS bytes, $5::int AS nothing, $6::jsonb AS doc',
    [40, 2, 'ünï 😀 \'"', Buffer.from([0, 1, 255]), null, JSON.stringify({ a: [1, null] })])).rows;
  out.types = (await client.query(
    "SELECT 9007199254740993::int8 AS big, 1.5::numeric AS num, true AS flag, '2024-02-29'::date::text AS day, " +
    "ARRAY[1, 2, NULL]::int[] AS arr, '{\"k\": \"v\"}'::json AS js, NULL::text AS n")).rows;
  out.named = [];
  for (let i = 0; i < 3; i++) {
    const result = await client.query({ name: 'it-named', text: 'SELECT $1::int * 10 AS x', values: [i] });
    out.named.push(result.rows[0].x);
  }
  out.prepared = (await client.query('SELECT name, statement FROM pg_prepared_statements')).rows;
  out.rowMode = (await client.query({ text: 'SELECT 1 AS a, 2 AS b', rowMode: 'array' })).rows;

  out.error = await catchCode(client.query('SELECT 1/0'));
  out.afterError = (await client.query('SELECT $1::text AS ok', ['ok'])).rows;
  await client.query('BEGIN');
  out.inTransaction = await catchCode(client.query('SELECT * FROM missing_table'));
  out.aborted = await catchCode(client.query('SELECT 1'));
  await client.query('ROLLBACK');

  await client.query("DO $$ BEGIN RAISE NOTICE 'node notice %', 1; END $$");
  out.notices = notices;

  // pipeline: true writes every query (Parse/Bind/Execute/Sync) without waiting for the previous one.
  const piped = new pg.Client({ connectionString: dsn, pipeline: true });
  await piped.connect();
  out.pipelined = await Promise.all(Array.from({ length: 100 }, (_, i) =>
    piped.query(i === 50 ? 'SELECT 1/0 AS i' : 'SELECT $1::int AS i', i === 50 ? [] : [i])
      .then((r) => r.rows[0].i, (error) => error.code)));
  await piped.end();

  // Cancel: the query must end with 57014 and the client must stay usable.
  const sleeping = new pg.Query('SELECT pg_sleep(30)');
  const finished = new Promise((resolve) => {
    sleeping.on('error', (error) => resolve(error.code));
    sleeping.on('end', () => resolve('completed'));
  });
  client.query(sleeping);
  await waitFor('pg_sleep to run', async () => (await monitor.query(sleepingSql(APP))).rows[0].n === 1);
  new pg.Client({ connectionString: dsn }).cancel(client, sleeping);
  out.cancel = await within('the cancelled query', finished);
  out.afterCancel = (await client.query('SELECT 2 AS two')).rows;

  await client.end();
  await monitor.end();
  return out;
});
