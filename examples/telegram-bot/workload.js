#!/usr/bin/env node
'use strict';
// The example chat-bot's database traffic, replayed against pgshelf.
//
// Per incoming message the bot reads, for one user in one project, the
// user's variables, the user's profile (balance and transaction totals),
// the chat's waiting workflow execution and the project's active workflow
// version: the four reads rules.toml caches. About one message in ten also
// writes: a payment (balance update and transaction insert in one
// transaction), an execution status change, or a variable update; now and
// then a new workflow version is published. User popularity is Zipf-like,
// messages of one chat are handled in order (as a bot does), several chats
// at once.
//
// At the end it prints what the application sent, what PostgreSQL received
// (pg_stat_statements, read over a direct connection), the read hit rate,
// errors, and stale reads: reads that did not show a write this workload
// had already seen committed (must be 0).
//
// Usage: node workload.js [options]
//   --url URL           the application's database URL, i.e. pgshelf (env DATABASE_URL)
//   --direct URL        PostgreSQL itself, same database, a role that may read
//                       pg_stat_statements (env DIRECT_DATABASE_URL); without it
//                       no server-side figures are printed
//   --messages N        stop after N messages (env WORKLOAD_MESSAGES; default 5000)
//   --seconds S         stop after S seconds (env WORKLOAD_SECONDS; whichever comes first)
//   --concurrency C     chats handled at once = pool size (env WORKLOAD_CONCURRENCY; default 8)
//   --write-ratio R     share of messages that write (default 0.1)
//   --zipf S            Zipf exponent of user popularity (default 1.2)
//   --seed N            random seed (default 1)
//   --rank-by-id        the lowest user ids are the most popular (as pgbench's
//                       random_zipfian), instead of ranks in a seeded random order
//   --prepared          named prepared statements (as many ORMs do) instead of unnamed ones
//   --write-transactions every write in an explicit transaction, also the one-statement
//                       ones (for poolers that lose extended-protocol autocommit writes)
//   --json              print the summary as one JSON object
// Exit status: 0; 1 when there were errors or stale reads; 2 when it could not run.
const { Pool, Client } = require('pg');

// ------------------------------------------------------------------ options

class UsageError extends Error {}

function parseArgs(argv) {
  const env = process.env;
  const opts = {
    url: env.DATABASE_URL,
    direct: env.DIRECT_DATABASE_URL,
    messages: Number(env.WORKLOAD_MESSAGES || 5000),
    seconds: Number(env.WORKLOAD_SECONDS || 0),
    concurrency: Number(env.WORKLOAD_CONCURRENCY || 8),
    writeRatio: 0.1,
    zipf: 1.2,
    seed: 1,
    prepared: false,
    writeTransactions: false,
    rankById: false,
    json: false,
  };
  const numeric = { '--messages': 'messages', '--seconds': 'seconds', '--concurrency': 'concurrency',
    '--write-ratio': 'writeRatio', '--zipf': 'zipf', '--seed': 'seed' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--url') opts.url = argv[++i];
    else if (arg === '--direct') opts.direct = argv[++i];
    else if (numeric[arg]) opts[numeric[arg]] = Number(argv[++i]);
    else if (arg === '--prepared') opts.prepared = true;
    else if (arg === '--write-transactions') opts.writeTransactions = true;
    else if (arg === '--rank-by-id') opts.rankById = true;
    else if (arg === '--json') opts.json = true;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(require('fs').readFileSync(__filename, 'utf8').split('\n')
        .filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
      process.exit(0);
    } else throw new UsageError(`unknown argument ${arg} (see --help)`);
  }
  if (!opts.url) throw new UsageError('give the database URL with --url or DATABASE_URL');
  for (const key of ['messages', 'seconds', 'concurrency', 'writeRatio', 'zipf', 'seed']) {
    if (!Number.isFinite(opts[key]) || opts[key] < 0) throw new UsageError(`bad value for ${key}`);
  }
  if (!opts.messages && !opts.seconds) throw new UsageError('give --messages or --seconds');
  opts.concurrency = Math.max(1, Math.floor(opts.concurrency));
  return opts;
}

// ------------------------------------------------------------------ statements

// Exactly as the bot sends them; rules.toml holds the same statements.
const SQL = {
  variables: 'SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2',
  profile: `SELECT u.id, u.username, u.balance, u.level, u.referrals,
       count(t.id) AS transactions, coalesce(sum(t.amount), 0) AS transactions_total
FROM users u
LEFT JOIN transactions t ON t.user_id = u.id AND t.project_id = u.project_id
WHERE u.id = $1 AND u.project_id = $2
GROUP BY u.id, u.project_id`,
  waiting: `SELECT id, workflow_version_id, state, updated_at
FROM workflow_executions
WHERE project_id = $1 AND chat_id = $2 AND status = 'waiting' AND wait_type = $3
ORDER BY updated_at DESC
LIMIT 1`,
  workflow: 'SELECT id, version, definition FROM workflow_versions WHERE project_id = $1 AND is_active',
  // writes
  balance: 'UPDATE users SET balance = balance + $1 WHERE id = $2 AND project_id = $3',
  transaction: 'INSERT INTO transactions (user_id, project_id, amount, kind) VALUES ($1, $2, $3, $4)',
  variableSet: 'UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4',
  executionResume: `UPDATE workflow_executions SET status = $1, state = $2, updated_at = now()
WHERE project_id = $3 AND chat_id = $4 AND wait_type = $5 AND status = 'waiting'`,
  executionWait: `UPDATE workflow_executions SET status = 'waiting', wait_type = $1, state = $2, updated_at = now()
WHERE project_id = $3 AND chat_id = $4 AND status = 'running'`,
  draft: 'INSERT INTO workflow_versions (project_id, version, definition) VALUES ($1, $2, $3) RETURNING id',
  deactivate: 'UPDATE workflow_versions SET is_active = false WHERE project_id = $1 AND is_active',
  activate: 'UPDATE workflow_versions SET is_active = true, published_at = now() WHERE project_id = $1 AND id = $2',
};
const READS = ['variables', 'profile', 'waiting', 'workflow'];

// ------------------------------------------------------------------ randomness

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Chats (user, project) ranked by popularity: P(rank r) ~ 1 / r^s. Ranks
// are assigned to chats in a seeded random order, or by user id.
function zipfChats(users, projects, s, random, rankById) {
  const chats = [];
  for (let u = 1; u <= users; u++) for (let p = 1; p <= projects; p++) chats.push([u, p]);
  for (let i = rankById ? 0 : chats.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [chats[i], chats[j]] = [chats[j], chats[i]];
  }
  const cumulative = new Float64Array(chats.length);
  let total = 0;
  for (let r = 0; r < chats.length; r++) {
    total += 1 / Math.pow(r + 1, s);
    cumulative[r] = total;
  }
  return () => {
    const x = random() * total;
    let lo = 0;
    let hi = chats.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cumulative[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return chats[lo];
  };
}

// ------------------------------------------------------------------ measuring

const MEASURE_MARK = 'pg_stat_statements'; // every measurement query names it: excluded from the figures

async function queryIds(direct) {
  // The normalised statements' ids, as pg_stat_statements keys them.
  const samples = { variables: [1, 1], profile: [1, 1], waiting: [1, 1, 'message'], workflow: [1] };
  const ids = {};
  for (const name of READS) {
    // Text format: the JSON one gives the 64-bit id as a number, which JavaScript rounds.
    const { rows } = await direct.query(`EXPLAIN (VERBOSE) ${SQL[name]}`, samples[name]);
    const line = rows.map((r) => r['QUERY PLAN']).find((l) => /^\s*Query Identifier: /.test(l));
    if (!line) {
      throw new Error('EXPLAIN shows no query identifier: is pg_stat_statements loaded (compute_query_id)?');
    }
    ids[name] = line.split(':')[1].trim();
  }
  return ids;
}

async function snapshot(direct) {
  const { rows } = await direct.query(
    `SELECT s.userid::text || '/' || s.queryid::text || '/' || s.toplevel::text AS k, s.queryid::text AS queryid,
            s.calls::text AS calls, (s.query ILIKE '%${MEASURE_MARK}%') AS measuring
     FROM pg_stat_statements s
     WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`);
  const map = new Map();
  for (const r of rows) map.set(r.k, { queryid: r.queryid, calls: Number(r.calls), measuring: r.measuring });
  return map;
}

function received(before, after, readIds) {
  const byRead = Object.fromEntries(READS.map((n) => [n, 0]));
  let total = 0;
  const nameOf = new Map(Object.entries(readIds).map(([n, id]) => [id, n]));
  for (const [k, a] of after) {
    if (a.measuring) continue;
    const delta = a.calls - (before.has(k) ? before.get(k).calls : 0);
    if (delta <= 0) continue;
    total += delta;
    if (nameOf.has(a.queryid)) byRead[nameOf.get(a.queryid)] += delta;
  }
  return { total, byRead };
}

// ------------------------------------------------------------------ the bot

class Bot {
  constructor(pool, opts, random) {
    this.pool = pool;
    this.opts = opts;
    this.random = random;
    this.sent = Object.fromEntries(Object.keys(SQL).map((n) => [n, 0]));
    this.sent.begin = 0;
    this.sent.commit = 0;
    this.sent.rollback = 0;
    this.errors = [];
    this.stale = [];
    this.latencies = []; // ms per handled message, reads and writes
    this.expect = new Map(); // chat -> what its next message must read
    this.published = new Map(); // project -> { id, at } of the last publish that committed
    this.publishing = false;
    this.versions = new Map(); // project -> highest version number
  }

  async q(client, name, values) {
    this.sent[name]++;
    const config = { text: SQL[name], values };
    if (this.opts.prepared) config.name = `bot_${name}`;
    return client.query(config);
  }

  async raw(client, sql) {
    this.sent[sql.toLowerCase()]++;
    return client.query(sql);
  }

  staleRead(what) {
    this.stale.push(what);
  }

  async handle(userId, projectId) {
    const chat = `${userId}:${projectId}`;
    const client = await this.pool.connect();
    try {
      const started = performance.now();
      const variables = (await this.q(client, 'variables', [userId, projectId])).rows;
      const profile = (await this.q(client, 'profile', [userId, projectId])).rows[0];
      const waiting = (await this.q(client, 'waiting', [projectId, userId, 'message'])).rows[0];
      const workflow = (await this.q(client, 'workflow', [projectId])).rows[0];

      // Everything this chat's previous message wrote has committed: it must show.
      const want = this.expect.get(chat);
      if (want) {
        if (want.variable) {
          const got = variables.find((v) => v.key === want.variable.key);
          if (!got || got.value !== want.variable.value) {
            this.staleRead(`${chat} variables: ${want.variable.key}=${want.variable.value} expected, got ${got && got.value}`);
          }
        }
        if (want.balance !== undefined && (profile.balance !== want.balance || Number(profile.transactions) !== want.transactions)) {
          this.staleRead(`${chat} profile: balance ${want.balance} / ${want.transactions} transactions expected, ` +
            `got ${profile.balance} / ${profile.transactions}`);
        }
        if (want.waiting !== undefined && Boolean(waiting) !== want.waiting) {
          this.staleRead(`${chat} waiting execution: ${want.waiting ? 'one' : 'none'} expected, got ${waiting ? 'one' : 'none'}`);
        }
        this.expect.delete(chat);
      }
      const published = this.published.get(projectId);
      if (published && published.at < started && (!workflow || Number(workflow.id) < published.id)) {
        this.staleRead(`project ${projectId} workflow: version id >= ${published.id} expected, got ${workflow && workflow.id}`);
      }

      if (this.random() < this.opts.writeRatio) {
        await this.write(client, chat, userId, projectId, { profile, waiting });
      }
      this.latencies.push(performance.now() - started);
    } finally {
      client.release();
    }
  }

  // One statement as the bot's single writes send it: autocommit, or inside
  // BEGIN/COMMIT with --write-transactions.
  async single(client, name, values) {
    if (!this.opts.writeTransactions) return this.q(client, name, values);
    await this.raw(client, 'BEGIN');
    try {
      const result = await this.q(client, name, values);
      await this.raw(client, 'COMMIT');
      return result;
    } catch (error) {
      await this.raw(client, 'ROLLBACK').catch(() => {});
      throw error;
    }
  }

  async write(client, chat, userId, projectId, seen) {
    const pick = this.random();
    if (pick < 0.01 && !this.publishing) {
      await this.publish(client, projectId);
    } else if (pick < 0.4) {
      // A payment: balance and transaction in one transaction.
      const cents = 100 + Math.floor(this.random() * 900);
      const amount = (cents / 100).toFixed(2);
      await this.raw(client, 'BEGIN');
      try {
        await this.q(client, 'balance', [amount, userId, projectId]);
        await this.q(client, 'transaction', [userId, projectId, amount, 'credit']);
        await this.raw(client, 'COMMIT');
      } catch (error) {
        await this.raw(client, 'ROLLBACK').catch(() => {});
        throw error;
      }
      const balanceCents = Math.round(Number(seen.profile.balance) * 100) + cents;
      this.expect.set(chat, { ...this.expect.get(chat), balance: (balanceCents / 100).toFixed(2),
        transactions: Number(seen.profile.transactions) + 1 });
    } else if (pick < 0.7) {
      // The chat's execution moves on, or starts waiting for a message again.
      if (seen.waiting) {
        await this.single(client, 'executionResume', ['running', { node: 'resumed' }, projectId, userId, 'message']);
        this.expect.set(chat, { ...this.expect.get(chat), waiting: false });
      } else {
        const result = await this.single(client, 'executionWait', ['message', { node: 'ask' }, projectId, userId]);
        if (result.rowCount > 0) this.expect.set(chat, { ...this.expect.get(chat), waiting: true });
      }
    } else {
      const key = this.random() < 0.5 ? 'step' : 'city';
      const value = `${key}-${Math.floor(this.random() * 1e6)}`;
      await this.single(client, 'variableSet', [value, userId, projectId, key]);
      this.expect.set(chat, { ...this.expect.get(chat), variable: { key, value } });
    }
  }

  async publish(client, projectId) {
    // One publisher at a time (an admin action): the partial unique index
    // allows one active version per project.
    this.publishing = true;
    try {
      const version = (this.versions.get(projectId) || 3) + 1;
      this.versions.set(projectId, version);
      await this.raw(client, 'BEGIN');
      try {
        const { rows } = await this.q(client, 'draft', [projectId, version, { steps: version * 3, entry: 'start' }]);
        const id = Number(rows[0].id);
        await this.q(client, 'deactivate', [projectId]);
        await this.q(client, 'activate', [projectId, id]);
        await this.raw(client, 'COMMIT');
        this.published.set(projectId, { id, at: performance.now() });
      } catch (error) {
        await this.raw(client, 'ROLLBACK').catch(() => {});
        throw error;
      }
    } finally {
      this.publishing = false;
    }
  }
}

// ------------------------------------------------------------------ main

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const random = mulberry32(opts.seed);

  let direct = null;
  let readIds = null;
  let before = null;
  let users = 1000;
  let projects = 3;
  let startVersions = [];
  if (opts.direct) {
    direct = new Client({ connectionString: opts.direct, application_name: 'workload_measure' });
    await direct.connect();
    const { rows } = await direct.query(`SELECT max(id)::int AS users, max(project_id)::int AS projects FROM users /* ${MEASURE_MARK} */`);
    users = rows[0].users;
    projects = rows[0].projects;
    const versions = await direct.query(`SELECT project_id::int AS p, max(version)::int AS v FROM workflow_versions GROUP BY 1 /* ${MEASURE_MARK} */`);
    readIds = await queryIds(direct);
    before = await snapshot(direct).catch((error) => {
      if (error.code === '42P01') {
        error.message += ' (in the --direct database: shared_preload_libraries = pg_stat_statements and ' +
          'CREATE EXTENSION pg_stat_statements)';
      }
      throw error;
    });
    startVersions = versions.rows;
  }
  if (!users) throw new Error('no users: load schema.sql and seed.sql first');

  const pool = new Pool({ connectionString: opts.url, max: opts.concurrency, application_name: 'telegram_bot' });
  pool.on('error', (error) => console.error('idle client error:', error.message));
  const bot = new Bot(pool, opts, random);
  for (const r of startVersions) bot.versions.set(r.p, r.v);
  const nextChat = zipfChats(users, projects, opts.zipf, random, opts.rankById);

  const started = performance.now();
  const deadline = opts.seconds ? started + opts.seconds * 1000 : Infinity;
  let messages = 0;
  let handled = 0;
  const busy = new Map(); // chat -> promise of its last message: one chat's messages run in order

  async function worker() {
    for (;;) {
      if ((opts.messages && messages >= opts.messages) || performance.now() >= deadline) return;
      messages++;
      const [userId, projectId] = nextChat();
      const chat = `${userId}:${projectId}`;
      const previous = busy.get(chat) || Promise.resolve();
      const current = previous.then(() => bot.handle(userId, projectId)).then(
        () => { handled++; },
        (error) => {
          handled++;
          bot.errors.push(`${chat}: ${error.code || ''} ${error.message}`);
        });
      busy.set(chat, current);
      await current;
      if (busy.get(chat) === current) busy.delete(chat);
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.end();

  const sentReads = READS.reduce((n, r) => n + bot.sent[r], 0);
  const latencies = Float64Array.from(bot.latencies).sort();
  const percentile = (q) => (latencies.length
    ? Number(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))].toFixed(3)) : null);
  const sentTotal = Object.values(bot.sent).reduce((a, b) => a + b, 0);
  const summary = {
    messages: handled,
    seconds: Number(elapsed.toFixed(2)),
    messages_per_second: Number((handled / elapsed).toFixed(1)),
    latency_ms: { p50: percentile(0.5), p99: percentile(0.99) },
    sent: { total: sentTotal, reads: sentReads, writes: sentTotal - sentReads, by_statement: bot.sent },
    received: null,
    hit_rate: null,
    errors: bot.errors.length,
    stale_reads: bot.stale.length,
  };
  if (direct) {
    const after = await snapshot(direct);
    await direct.end();
    const got = received(before, after, readIds);
    const receivedReads = READS.reduce((n, r) => n + got.byRead[r], 0);
    summary.received = { total: got.total, reads: receivedReads, by_read: got.byRead };
    summary.hit_rate = sentReads ? Number((1 - receivedReads / sentReads).toFixed(4)) : null;
    summary.hit_rate_by_read = Object.fromEntries(READS.map((r) => [r,
      bot.sent[r] ? Number((1 - got.byRead[r] / bot.sent[r]).toFixed(4)) : null]));
  }

  if (opts.json) {
    process.stdout.write(JSON.stringify(summary) + '\n');
  } else {
    const pct = (x) => (x === null ? 'n/a (no --direct)' : `${(x * 100).toFixed(1)} %`);
    const lines = [
      `messages:             ${summary.messages} in ${summary.seconds} s (${summary.messages_per_second}/s)`,
      `statements sent:      ${sentTotal} (reads ${sentReads}, writes and transaction control ${sentTotal - sentReads})`,
      `statements received:  ${summary.received ? `${summary.received.total} (reads ${summary.received.reads})` : 'n/a (no --direct)'}`,
      `read hit rate:        ${pct(summary.hit_rate)}`,
    ];
    if (summary.hit_rate_by_read) {
      lines.push(`  by read:            ${READS.map((r) => `${r} ${pct(summary.hit_rate_by_read[r])}`).join(', ')}`);
    }
    lines.push(`errors:               ${summary.errors}`, `stale reads:          ${summary.stale_reads}`);
    process.stdout.write(lines.join('\n') + '\n');
  }
  for (const e of bot.errors.slice(0, 10)) console.error('error:', e);
  for (const s of bot.stale.slice(0, 10)) console.error('stale read:', s);
  return summary.errors || summary.stale_reads ? 1 : 0;
}

main().then((code) => process.exit(code), (error) => {
  console.error(error instanceof UsageError ? `workload.js: ${error.message}` : (error && error.stack) || error);
  process.exit(2);
});
