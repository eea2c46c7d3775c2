// Nothing lost during a long NATS outage (issue 15, part 4): studyroom keeps at most
// --focus-queue-max focus events in memory (here 50) and spills the rest to
// --focus-spill-path. With a real `nats-server -js` stopped while learners send 90 focus
// events, and studyroom itself restarted during the outage (SIGTERM: memory is written to
// the spill file; the new process replays it), every event reaches the stream
// STUDYROOM_PROCTORING once NATS is back: all of them, in the order the server acknowledged
// them, each Nats-Msg-Id once; nothing dropped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { connect } from 'nats';
import { startNats, startServer } from './lib/server.js';
import { joinClient, ok } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';
import { streamMessages } from './lib/jetstream.js';

const STREAM = 'STUDYROOM_PROCTORING';
const NATS_PORT = 14223;
const ROOM = 'exam-spill';
const QUEUE_MAX = 50;
const LEARNERS = 5;
const EVENTS_EACH = 18; // under the per-learner limit of 20 per 10 s
const METRICS = 'http://127.0.0.1:9100/metrics';

async function metric(name) {
  const text = await (await fetch(METRICS)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

test('focus events past the memory bound spill to disk and all arrive once after NATS and studyroom restart', { timeout: 240000 }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-spill-'));
  const storeDir = path.join(dir, 'js');
  const spill = path.join(dir, 'focus.spill');
  const args = ['--focus-queue-max', String(QUEUE_MAX), '--focus-spill-path', spill];
  let nats = await startNats({ port: NATS_PORT, storeDir });
  let server = null;
  let nc = null;
  const clients = [];
  t.after(async () => {
    for (const c of clients) c.close();
    if (nc) await nc.close().catch(() => {});
    if (server) await server.stop();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  });
  try {
    server = await startServer({ args, env: { NATS_URL: nats.url } });
    const acked = [];
    const learners = [];
    for (let i = 0; i < LEARNERS; i++) {
      const c = await joinClient(server.baseUrl, { room: ROOM, name: `L${i}` });
      clients.push(c);
      learners.push({ c, lost: false });
    }
    const send = async (l) => {
      const state = l.lost ? 'regained' : 'lost';
      const ack = await ok(l.c.socket, 'focus', { state, reason: state === 'lost' ? 'hidden' : 'visible', at: Date.now() });
      assert.ok(ack.event, `an event: ${JSON.stringify(ack)}`);
      l.lost = !l.lost;
      acked.push(ack.event);
    };

    // 1. NATS up: the stream exists and holds the first event.
    await send(learners[0]);
    nc = await connect({ servers: nats.url, reconnect: false });
    let jsm = await nc.jetstreamManager();
    await waitFor(async () => (await streamMessages(jsm, STREAM)).length === 1, { what: 'the first event stored', timeoutMs: 20000 });
    await nc.close();
    nc = null;

    // 2. NATS down; 90 events, round-robin over the learners: 50 in memory, 40 spilled.
    nats.signal('SIGTERM');
    await nats.waitForExit(10000);
    for (let k = 0; k < EVENTS_EACH; k++) {
      for (const l of learners) await send(l);
    }
    const outage = LEARNERS * EVENTS_EACH;
    await waitFor(async () => (await metric('studyroom_focus_events_pending')) === outage,
      { what: `${outage} events pending`, timeoutMs: 10000 });
    assert.equal(await metric('studyroom_focus_events_spilled'), outage - QUEUE_MAX);
    assert.ok((await metric('studyroom_focus_spill_bytes')) > 0, 'the spill file has bytes');
    assert.equal(await metric('studyroom_focus_events_dropped_total'), 0);

    // 3. studyroom restarts while NATS is still down: what was pending is in the file.
    for (const c of clients) c.close();
    clients.length = 0;
    server.signal('SIGTERM');
    assert.deepEqual(await server.waitForExit(30000), { code: 0, signal: null });
    assert.ok((await stat(spill)).size > 0, 'the spill file holds the pending events');
    server = await startServer({ args, env: { NATS_URL: nats.url } });
    assert.equal(await metric('studyroom_focus_events_pending'), outage, 'the new process counts the replayed backlog');

    // 4. NATS back: every event stored once, in order; then one more comes after them.
    nats = await startNats({ port: NATS_PORT, storeDir });
    nc = await connect({ servers: nats.url, reconnect: false });
    jsm = await nc.jetstreamManager();
    let messages = [];
    await waitFor(async () => { messages = await streamMessages(jsm, STREAM); return messages.length >= acked.length; },
      { what: `${acked.length} events stored`, timeoutMs: 60000, progress: () => messages.length });
    const late = await joinClient(server.baseUrl, { room: ROOM, name: 'Late' });
    clients.push(late);
    await send({ c: late, lost: false });
    await waitFor(async () => { messages = await streamMessages(jsm, STREAM); return messages.length >= acked.length; },
      { what: 'the event sent after the replay', timeoutMs: 20000 });
    // Give a duplicate the chance to show up before counting.
    await waitFor(async () => (await metric('studyroom_focus_events_pending')) === 0, { what: 'nothing pending', timeoutMs: 10000 });
    messages = await streamMessages(jsm, STREAM);
    assert.equal(messages.length, acked.length, 'every event stored exactly once');
    const ids = messages.map((m) => m.msgId);
    assert.equal(new Set(ids).size, ids.length, 'distinct Nats-Msg-Id');
    assert.deepEqual(messages.map((m) => [m.payload.participant, m.payload.state, m.payload.at]),
      acked.map((e) => [e.participant, e.state, e.at]), 'the acknowledged events, in order');
    messages.forEach((m, i) => assert.ok(m.msgId.startsWith(`${ROOM}/${acked[i].participantId}/${acked[i].at}/`), m.msgId));
    assert.equal(await metric('studyroom_focus_events_spilled'), 0);
    assert.equal((await stat(spill)).size, 0, 'the spill file is empty once replayed');
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${server ? server.logs().split('\n').slice(-80).join('\n') : '(not started)'}`);
    console.error(`==== nats-server log (tail)\n${nats.logs().split('\n').slice(-40).join('\n')}`);
    throw e;
  }
});
