'use strict';
// Helpers shared by the Node client scripts: bounded waiting and output.

/** Resolves with fn()'s first truthy value; rejects after `ms` milliseconds. */
async function waitFor(what, fn, ms = 10000, interval = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** Rejects if `promise` has not settled within `ms` milliseconds. */
function within(what, promise, ms = 15000) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** SQL that counts this application's backends running pg_sleep. */
function sleepingSql(applicationName) {
  return "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = '" + applicationName +
    "' AND state = 'active' AND query LIKE '%pg_sleep%'";
}

/** Runs main(dsn), prints its result as JSON on stdout; exit 1 on any error. */
function run(main) {
  const dsn = process.argv[2];
  if (!dsn) {
    console.error('usage: node script.js DSN');
    process.exit(2);
  }
  within('the whole script', main(dsn), 60000).then(
    (result) => {
      process.stdout.write(JSON.stringify(result) + '\n');
      process.exit(0);
    },
    (error) => {
      console.error(error && error.stack ? error.stack : error);
      process.exit(1);
    });
}

module.exports = { waitFor, within, sleepingSql, run };
