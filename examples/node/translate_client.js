#!/usr/bin/env node
// Translate texts through translation-worker (wire contract v1), with amqplib.
//
//   node translate_client.js [--url URL] [--exchange translation] [--source ko]
//                            [--target en] [--timeout 30] [TEXT ...]
//
// Texts come from the arguments, else one per line from stdin. Prints one translation
// per line. Exits 1 on an error reply, a text that failed, a pair no worker serves,
// or no reply in time.
//
// What it shows: a confirm channel, publishing to the exchange with routing key
// "<source>-<target>" and mandatory (an unserved pair comes back as a 'return' before
// the confirm, so it fails at once instead of timing out), an exclusive server-named
// reply queue, a unique correlationId, and a wait with a timeout that ignores replies
// to other (earlier) calls.
'use strict';

const amqp = require('amqplib');
const { randomUUID } = require('node:crypto');

function parseArgs(argv) {
  const opts = {
    url: 'amqp://guest:guest@127.0.0.1:5672/%2f',
    exchange: 'translation',
    source: 'ko',
    target: 'en',
    timeout: 30,
    texts: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const key = a.startsWith('--') ? a.slice(2) : null;
    if (key !== null && key in opts && key !== 'texts') {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      opts[key] = key === 'timeout' ? Number(argv[++i]) : argv[++i];
    } else {
      opts.texts.push(a);
    }
  }
  return opts;
}

async function readStdinLines() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/).filter((l, i, all) => i < all.length - 1 || l !== '');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const texts = opts.texts.length ? opts.texts : await readStdinLines();
  if (texts.length === 0) return 0;

  const conn = await amqp.connect(opts.url);
  try {
    const ch = await conn.createConfirmChannel();
    // Exclusive, server-named: only this connection reads it; deleted with it.
    const { queue: replyQueue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
    const corr = randomUUID();

    let settle;
    const outcome = new Promise((resolve) => { settle = resolve; });
    // Replies to calls we no longer wait for (late, or a duplicate after a redelivery)
    // carry another correlationId: ignore them.
    await ch.consume(replyQueue, (msg) => {
      if (msg && msg.properties.correlationId === corr) settle({ reply: msg });
    }, { noAck: true });
    // A mandatory job no queue is bound to comes back here (before its confirm).
    ch.on('return', (msg) => {
      if (msg.properties.correlationId === corr) settle({ returned: true });
    });

    const job = {
      texts,
      source: opts.source,
      target: opts.target,
      // Past this the worker answers deadline_exceeded instead of translating.
      deadline_ms: Date.now() + opts.timeout * 1000,
    };
    ch.publish(opts.exchange, `${opts.source}-${opts.target}`, Buffer.from(JSON.stringify(job)), {
      mandatory: true,
      persistent: true,
      contentType: 'application/json',
      correlationId: corr,
      replyTo: replyQueue,
    });
    await ch.waitForConfirms();

    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ timeout: true }), opts.timeout * 1000);
    });
    const result = await Promise.race([outcome, timedOut]);
    clearTimeout(timer);

    if (result.returned) {
      console.error(`error: no worker serves ${opts.source}-${opts.target} on exchange '${opts.exchange}'`);
      return 1;
    }
    if (result.timeout) {
      console.error(`error: no reply within ${opts.timeout} s`);
      return 1;
    }
    const reply = JSON.parse(result.reply.content.toString('utf8'));
    if (reply.status !== 'ok') {
      console.error(`error: ${reply.error && reply.error.code}: ${reply.error && reply.error.message}`);
      return 1;
    }
    for (const t of reply.translations) process.stdout.write(`${t}\n`);
    // Present only when some texts were cut at the model's input limit, or failed
    // while others were translated (their translation is then "").
    (reply.truncated || []).forEach((cut, i) => {
      if (cut) console.error(`warning: text ${i} was truncated`);
    });
    let failed = 0;
    (reply.errors || []).forEach((e, i) => {
      if (e) {
        failed += 1;
        console.error(`error: text ${i}: ${e.code}: ${e.message}`);
      }
    });
    return failed ? 1 : 0;
  } finally {
    await conn.close();
  }
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`error: ${err.message}`); process.exitCode = 1; },
);
