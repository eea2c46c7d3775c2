// The audit-log webhook (docs/events.md, "Audit-log webhook"): a real Node HTTP receiver
// checks every POST's HMAC signature and counts event ids, as the platform's audit service
// would. Focus events reach it in order; a 503 is retried and a 400 is given up (counted);
// the receiver stopped mid-exam gets everything once it is back; and studyroom killed with
// -9 while events wait, then started on the same spool, delivers them all: every acked
// event arrives, none twice (by id).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { startServer } from './lib/server.js';
import { joinClient, ok } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';

const SECRET = 'audit-webhook-test-secret-0123456789';
const PORT = 18480;
const METRICS = 'http://127.0.0.1:9100/metrics';
const ROOM = 'exam-audit';

// The receiver: verifies signature and timestamp, answers with `plan.shift()` (default
// 204), keeps each accepted event and counts every id it accepted.
function receiver() {
  const r = { events: [], counts: new Map(), badSignatures: 0, requests: 0, plan: [], server: null };
  r.start = () => new Promise((resolve, reject) => {
    r.server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        r.requests += 1;
        const body = Buffer.concat(chunks);
        const ts = req.headers['x-studyroom-timestamp'];
        const want = 'sha256=' + crypto.createHmac('sha256', SECRET).update(`${ts}.`).update(body).digest('hex');
        const got = String(req.headers['x-studyroom-signature'] || '');
        const fresh = Math.abs(Date.now() / 1000 - Number(ts)) < 300;
        if (got.length !== want.length || !crypto.timingSafeEqual(Buffer.from(got), Buffer.from(want)) || !fresh) {
          r.badSignatures += 1;
          res.writeHead(401).end();
          return;
        }
        const status = r.plan.length ? r.plan.shift() : 204;
        if (status < 300) {
          const ev = JSON.parse(body);
          assert.equal(req.headers['x-studyroom-event-id'], ev.id, 'id header = body id');
          assert.equal(req.headers['content-type'], 'application/json');
          r.counts.set(ev.id, (r.counts.get(ev.id) || 0) + 1);
          if (r.counts.get(ev.id) === 1) r.events.push(ev);
        }
        res.writeHead(status).end();
      });
    });
    r.server.once('error', reject);
    r.server.listen(PORT, '127.0.0.1', resolve);
  });
  r.stop = () => new Promise((resolve) => {
    r.server.close(resolve);
    r.server.closeAllConnections();
  });
  return r;
}

async function metric(name) {
  const text = await (await fetch(METRICS)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

test('focus events reach the audit webhook signed, in order, once each, across a receiver outage and a kill -9', { timeout: 180000 }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-webhook-'));
  const spool = path.join(dir, 'audit.spool');
  const args = ['--audit-webhook-url', `http://127.0.0.1:${PORT}/audit`, '--audit-webhook-spool', spool,
    '--audit-webhook-max-backoff-ms', '1000', '--audit-webhook-timeout-ms', '2000'];
  const env = { STUDYROOM_AUDIT_WEBHOOK_SECRET: SECRET };
  const rx = receiver();
  await rx.start();
  let server = await startServer({ args, env });
  let ann = null;
  t.after(async () => {
    if (ann) ann.close();
    await server.stop();
    if (rx.server.listening) await rx.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const acked = []; // { id, state, reason, at } in the order the server acknowledged them
  let lost = false;
  const send = async (reason) => {
    lost = !lost;
    const ack = await ok(ann.socket, 'focus', { state: lost ? 'lost' : 'regained', reason, at: Date.now() });
    assert.match(ack.auditId, /^fe_[0-9a-f]{32}$/, `audit id in ${JSON.stringify(ack)}`);
    acked.push({ id: ack.auditId, state: ack.event.state, reason, at: ack.event.at });
  };
  const arrived = (n, what) => waitFor(() => rx.events.length >= n, {
    what, timeoutMs: 30000, progress: () => `${rx.events.length} of ${n}; requests ${rx.requests}`,
  });
  try {
    ann = await joinClient(server.baseUrl, { room: ROOM, name: 'Ann' });

    // 1. Receiver up: delivered, signed, the NATS JSON plus the id.
    await send('hidden');
    await send('visible');
    await arrived(2, 'the first two events');
    assert.deepEqual(Object.keys(rx.events[0]).sort(),
      ['at', 'client_at', 'id', 'lost_ms', 'name', 'participant', 'reason', 'room', 'state', 'v']);
    assert.equal(rx.events[0].room, ROOM);
    assert.equal(rx.events[1].lost_ms, acked[1].at - acked[0].at);

    // 2. A 503 is retried (same id), a 400 is given up and counted; the room moves on.
    rx.plan.push(503, 503);
    await send('blur');
    await arrived(3, 'the event answered 503 twice');
    rx.plan.push(400);
    await send('focus');
    await send('hidden');
    await arrived(4, 'the event after the refused one');
    await waitFor(async () => (await metric('studyroom_webhook_deliveries_total{result="rejected"}')) === 1,
      { what: 'one rejected delivery counted' });
    assert.ok((await metric('studyroom_webhook_deliveries_total{result="retry"}')) >= 2, 'the 503s counted');
    const refused = acked.splice(3, 1)[0]; // the 400: never arrives, never retried
    assert.ok(!rx.counts.has(refused.id), 'the refused event is not retried into the log');

    // 3. Receiver stopped mid-exam: events queue; back, it gets all of them.
    await rx.stop();
    for (const r of ['visible', 'blur', 'focus']) await send(r);
    await waitFor(async () => (await metric('studyroom_webhook_pending')) === 3, { what: '3 pending while the receiver is down' });
    await rx.start();
    await arrived(7, 'the events sent while the receiver was down');

    // 4. Receiver down again, events pending, studyroom killed with -9 and started again on
    //    the same spool: the new process delivers them.
    await rx.stop();
    for (const r of ['hidden', 'visible', 'blur']) await send(r);
    await waitFor(async () => (await metric('studyroom_webhook_pending')) === 3, { what: '3 pending before the kill' });
    assert.ok((await metric('studyroom_webhook_oldest_pending_seconds')) >= 0);
    ann.close();
    ann = null;
    server.signal('SIGKILL');
    await server.waitForExit(10000);
    assert.ok((await stat(spool)).size > 0, 'the spool holds the pending events');
    server = await startServer({ args, env });
    assert.equal(await metric('studyroom_webhook_pending'), 3, 'the restarted node owes the 3 events');
    await rx.start();
    await arrived(10, 'the events pending at the kill');
    await waitFor(async () => (await metric('studyroom_webhook_pending')) === 0, { what: 'nothing pending' });

    // Every acknowledged event (but the refused one) arrived once, in the order sent.
    assert.deepEqual(rx.events.map((e) => e.id), acked.map((a) => a.id), 'ids, in order');
    assert.deepEqual(rx.events.map((e) => [e.state, e.reason, e.at]), acked.map((a) => [a.state, a.reason, a.at]));
    assert.deepEqual([...rx.counts.values()].filter((n) => n !== 1), [], 'no id twice');
    assert.equal(rx.badSignatures, 0, 'every signature checked out');
    // After everything is delivered a fresh start owes nothing.
    await server.stop();
    server = await startServer({ args, env });
    assert.equal(await metric('studyroom_webhook_pending'), 0);
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${server.logs().split('\n').slice(-120).join('\n')}`);
    throw e;
  }
});

test('a webhook URL without a secret stops the start with a message naming the flag', async () => {
  const { spawnLogged, studyroomBin } = await import('./lib/server.js');
  const p = spawnLogged('studyroom', studyroomBin(), ['--dev', '--audit-webhook-url', `http://127.0.0.1:${PORT}/`]);
  const exit = await p.waitForExit(10000);
  assert.notEqual(exit.code, 0);
  assert.match(p.logs(), /--audit-webhook-secret/);
});
