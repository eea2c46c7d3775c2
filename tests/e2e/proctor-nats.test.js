// Focus events on JetStream (docs/events.md): with a real `nats-server -js` and studyroom
// started with NATS_URL, a learner's focus changes land in the stream STUDYROOM_PROCTORING
// on studyroom.proctoring.<room>.focus with the documented JSON fields, in order; and when
// NATS is stopped in the middle of a sequence and restarted (same port, same store), every
// event sent meanwhile is stored after the restart: none missing, in order, no duplicates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'nats';
import { startNats, startServer } from './lib/server.js';
import { joinClient, ok } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';
import { streamMessages } from './lib/jetstream.js';

const STREAM = 'STUDYROOM_PROCTORING';
const NATS_PORT = 14222;
const ROOM = 'exam-1';
const SUBJECT = `studyroom.proctoring.${ROOM}.focus`;
// docs/events.md: the payload's fields (FocusEvent's, less the room-local participantId).
const PAYLOAD_FIELDS = ['v', 'room', 'participant', 'name', 'state', 'reason', 'at', 'client_at', 'lost_ms'];
const TWO_MINUTES_NS = 120 * 1e9;

async function jetstream(url) {
  const nc = await connect({ servers: url, reconnect: false });
  return { nc, jsm: await nc.jetstreamManager() };
}

// Waits until the stream holds `count` messages (fails on more), and returns them.
async function waitForMessages(jsm, count, what) {
  let last = [];
  await waitFor(async () => {
    last = await streamMessages(jsm, STREAM);
    return last.length >= count;
  }, { what, timeoutMs: 60000, intervalMs: 250, progress: () => last.map((m) => `${m.seq}:${m.payload.state}/${m.payload.reason}`) });
  assert.equal(last.length, count, `${STREAM} holds more than ${count} messages: ${JSON.stringify(last, null, 1)}`);
  return last;
}

// The stream is exactly `acked` (the events the server acknowledged), in that order.
function assertStreamIs(messages, acked) {
  assert.deepEqual(messages.map((m) => m.subject), acked.map(() => SUBJECT), 'subjects');
  assert.deepEqual(messages.map((m) => Object.fromEntries(PAYLOAD_FIELDS.map((f) => [f, m.payload[f]]))),
    acked.map((e) => Object.fromEntries(PAYLOAD_FIELDS.map((f) => [f, e[f]]))), 'payloads, in order');
  const ids = messages.map((m) => m.msgId);
  assert.equal(new Set(ids).size, ids.length, `distinct Nats-Msg-Id: ${ids}`);
  messages.forEach((m, i) => {
    const e = acked[i];
    assert.ok(m.msgId && m.msgId.startsWith(`${ROOM}/${e.participantId}/${e.at}/`), `Nats-Msg-Id ${m.msgId} for ${JSON.stringify(e)}`);
  });
}

test('focus events reach JetStream in order, and survive a NATS restart mid-sequence', { timeout: 240000 }, async (t) => {
  const storeDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-nats-'));
  let nats = await startNats({ port: NATS_PORT, storeDir });
  let server = null;
  let js = null;
  t.after(async () => {
    if (js) await js.nc.close().catch(() => {});
    if (server) await server.stop();
    await nats.stop();
    await rm(storeDir, { recursive: true, force: true });
  });
  try {
    server = await startServer({ env: { NATS_URL: nats.url } });
    const ann = await joinClient(server.baseUrl, { room: ROOM, name: 'Ann' });
    t.after(() => ann.close());
    const acked = [];
    const send = async (state, reason) => {
      const ack = await ok(ann.socket, 'focus', { state, reason, at: Date.now() });
      assert.ok(ack.event, `an event, not a duplicate: ${JSON.stringify(ack)}`);
      acked.push(ack.event);
    };

    // 1. NATS up: lost, regained.
    await send('lost', 'hidden');
    await send('regained', 'visible');
    js = await jetstream(nats.url);
    const info = await waitFor(() => js.jsm.streams.info(STREAM), { what: `stream ${STREAM}`, timeoutMs: 20000 });
    assert.deepEqual(info.config.subjects, ['studyroom.proctoring.>']);
    assert.equal(info.config.storage, 'file');
    assert.equal(info.config.duplicate_window, TWO_MINUTES_NS);
    let messages = await waitForMessages(js.jsm, 2, 'the first two events in the stream');
    assertStreamIs(messages, acked);
    assert.deepEqual(messages.map((m) => [m.payload.state, m.payload.reason, m.payload.lost_ms === null]),
      [['lost', 'hidden', true], ['regained', 'visible', false]]);
    assert.equal(messages[1].payload.lost_ms, acked[1].at - acked[0].at);

    // 2. NATS stopped (by its PID): the learner carries on, the server still acknowledges.
    await js.nc.close();
    js = null;
    nats.signal('SIGTERM');
    await nats.waitForExit(10000);
    await send('lost', 'blur');
    await send('regained', 'focus');
    await send('lost', 'hidden');

    // 3. NATS back on the same port and store: the three are delivered, after the first two.
    nats = await startNats({ port: NATS_PORT, storeDir });
    js = await jetstream(nats.url);
    messages = await waitForMessages(js.jsm, 5, 'the three events sent while NATS was down');
    assertStreamIs(messages, acked);

    // 4. One more with NATS up: it is stored after them (the backlog is drained, nothing
    //    retried later shows up twice).
    await send('regained', 'visible');
    messages = await waitForMessages(js.jsm, 6, 'the event sent after the restart');
    assertStreamIs(messages, acked);
    assert.deepEqual(messages.map((m) => m.payload.state), ['lost', 'regained', 'lost', 'regained', 'lost', 'regained']);
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${server ? server.logs().split('\n').slice(-200).join('\n') : '(not started)'}`);
    console.error(`==== nats-server log (tail)\n${nats.logs().split('\n').slice(-60).join('\n')}`);
    throw e;
  }
});
