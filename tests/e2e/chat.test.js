// Room chat (docs/protocol.md, "Chat"): socket.io-client participants against the real
// binary. A message is trimmed, HTML-escaped and pushed to the room with its sender and the
// server's time (proctors included, the sender answered by its ack); bad input (not a
// string, empty, 2 001 characters, a flood) is refused with a clear code while the room
// goes on; a late joiner gets the history in its join ack (and by `history`); a token with
// the `chat: false` grant neither sends nor hears; every message is on NATS JetStream
// (`studyroom.room.<room>.message`). With Redis the history is a list capped at 100 that a
// node restarted on the same Redis serves again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'nats';
import { startNats, startRedis, startServer } from './lib/server.js';
import { joinClient, ok, request } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';

const NATS_PORT = 14222;
const REDIS_PORT = 16379;

const pushes = (c, event = 'message') => c.inbox.filter((e) => e.event === event).map((e) => e.data);
function assertError(ack, code, what) {
  assert.ok(ack && ack.error, `${what}: expected ${code}, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: ${JSON.stringify(ack)}`);
  assert.ok(ack.error.message.length > 0);
}

test('chat: pushed escaped with sender and time, bad input refused, history on join, chat-off grant, on NATS', { timeout: 120000 }, async (t) => {
  const storeDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-chat-nats-'));
  const nats = await startNats({ port: NATS_PORT, storeDir });
  const server = await startServer({ env: { NATS_URL: nats.url } });
  const clients = [];
  let nc = null;
  t.after(async () => {
    for (const c of clients) c.close();
    if (nc) await nc.close().catch(() => {});
    await server.stop();
    await nats.stop();
    await rm(storeDir, { recursive: true, force: true });
  });
  const ROOM = 'chat-room';
  const join = async (name, role = 'learner', extra = {}) => {
    const c = await joinClient(server.baseUrl, { room: ROOM, name, role, ...extra });
    clients.push(c);
    return c;
  };
  try {
    const pat = await join('Pat', 'proctor');
    const ann = await join('Ann');
    const bob = await join('Bob');
    const cy = await join('Cy', 'learner', { chat: '0' });
    assert.deepEqual(ann.ack.chatHistory, [], 'an empty room has no history');
    assert.equal(ann.ack.chat, true);
    assert.equal(cy.ack.chat, false);
    assert.equal(cy.ack.chatHistory, undefined, 'no history for a chat-off token');

    // 1. A message: trimmed, escaped, with sender and server time; the others get it.
    const before = Date.now();
    const sent = await ok(ann.socket, 'message', { text: '  <b>hi</b> & "bye"\n ' });
    const m1 = sent.message;
    assert.equal(m1.text, '&lt;b&gt;hi&lt;/b&gt; &amp; &quot;bye&quot;');
    assert.deepEqual(m1.from, { id: ann.id, identity: ann.identity, name: 'Ann', role: 'learner' });
    assert.equal(m1.room, ROOM);
    assert.match(m1.id, /^m[0-9a-f]+$/);
    assert.ok(m1.at >= before - 1000 && m1.at <= Date.now() + 1000, `server time ${m1.at}`);
    await waitFor(() => pushes(bob).length === 1 && pushes(pat).length === 1, { what: 'Bob and the proctor get the message' });
    assert.deepEqual(pushes(bob)[0], m1);
    assert.deepEqual(pushes(pat)[0], m1, 'proctors see chat');
    // Hangul counts as characters: 2 000 of them (6 000 bytes) are one message.
    const long = await ok(ann.socket, 'message', { text: '가'.repeat(2000) });
    assert.equal(long.message.text.length, 2000);
    const fromProctor = await ok(pat.socket, 'message', { text: '10 minutes left' });
    await waitFor(() => pushes(ann).length === 1, { what: 'the proctor message reaches Ann' });
    assert.equal(pushes(ann)[0].from.role, 'proctor');

    // 2. Bad input: clear codes, nothing pushed, the sender and the room keep working.
    assertError(await request(ann.socket, 'message', { text: 'x'.repeat(2001) }), 'message_too_long', '2 001 characters');
    assertError(await request(ann.socket, 'message', { text: 42 }), 'bad_request', 'a number');
    assertError(await request(ann.socket, 'message', { text: ['a'] }), 'bad_request', 'an array');
    assertError(await request(ann.socket, 'message', {}), 'bad_request', 'no text');
    assertError(await request(ann.socket, 'message', { text: ' \n\t ' }), 'bad_request', 'only spaces');
    assertError(await request(ann.socket, 'message', 'hello'), 'bad_request', 'not an object');
    assertError(await request(ann.socket, 'message'), 'bad_request', 'no payload');
    // A flood: 5 in 5 s pass, the rest is rate_limited; others are not affected.
    const flood = await Promise.all(Array.from({ length: 30 }, (_, i) => request(bob.socket, 'message', { text: `flood ${i}` })));
    // Accepted in the server's order (handlers run concurrently): ids are numbered in it.
    const byId = (a, b) => (BigInt(`0x${a.message.id.slice(1)}`) < BigInt(`0x${b.message.id.slice(1)}`) ? -1 : 1);
    const passed = flood.filter((a) => a && a.ok).sort(byId);
    assert.equal(passed.length, 5, `5 of the flood pass: ${JSON.stringify(flood.slice(0, 8))}`);
    for (const a of flood.filter((x) => !x.ok)) assertError(a, 'rate_limited', 'flood');
    const after = await ok(ann.socket, 'message', { text: 'still here' });
    assert.ok(bob.socket.connected, 'the flooder is refused, not cut, at this volume');

    // 3. Chat off by grant: cannot send or read, hears nothing.
    assertError(await request(cy.socket, 'message', { text: 'hello?' }), 'chat_disabled', 'chat-off sender');
    assertError(await request(cy.socket, 'history', {}), 'chat_disabled', 'chat-off history');
    assert.deepEqual(pushes(cy), [], 'a chat-off participant hears no message');

    // 4. History: a late joiner gets every accepted message, oldest first; `history` agrees.
    // Oldest first means in the server's order, which its ids number: the history must be
    // exactly the accepted messages, each id above the one before.
    const idNum = (m) => BigInt(`0x${m.id.slice(1)}`);
    const accepted = [m1, long.message, fromProctor.message, ...passed.map((a) => a.message), after.message]
      .sort((a, b) => (idNum(a) < idNum(b) ? -1 : 1));
    const dan = await join('Dan');
    const hist = dan.ack.chatHistory;
    const ids = (list) => list.map((m) => `${m.id}:${m.text}`).join(' ');
    assert.ok(hist.every((m, i) => i === 0 || idNum(hist[i - 1]) < idNum(m)), `join ack history in id order: ${ids(hist)}`);
    assert.deepEqual(hist, accepted, `join ack history ${ids(hist)} vs accepted ${ids(accepted)}`);
    assert.deepEqual((await ok(dan.socket, 'history', {})).messages, accepted, '`history` request');

    // 5. NATS: every message on studyroom.room.<room>.message, in order.
    nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    let onNats = [];
    await waitFor(async () => {
      const info = await jsm.streams.info('STUDYROOM_EVENTS').catch(() => null);
      if (!info) return false;
      onNats = [];
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage('STUDYROOM_EVENTS', { seq }).catch(() => null);
        if (m && m.subject === `studyroom.room.${ROOM}.message`) onNats.push(m.json());
      }
      return onNats.length >= accepted.length;
    }, { what: 'chat messages on JetStream', timeoutMs: 30000, progress: () => `${onNats.length} of ${accepted.length}` });
    assert.deepEqual(onNats.map((e) => e.message), accepted);
    assert.ok(onNats.every((e) => e.type === 'message' && e.room === ROOM && e.v === 1));
    assert.ok(!server.exited());
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${server.logs().split('\n').slice(-80).join('\n')}`);
    throw e;
  }
});

test('chat with Redis: the history is a list capped at 100, served again by a node restarted on the same Redis', { timeout: 120000 }, async (t) => {
  const redis = await startRedis({ port: REDIS_PORT });
  const ROOM = 'chat-redis';
  const args = ['--node-id', 'chat-a', '--heartbeat-ms', '200', '--node-ttl-ms', '1000'];
  let server = await startServer({ env: { REDIS_URL: redis.url }, args });
  const clients = [];
  t.after(async () => {
    for (const c of clients) c.close();
    await server.stop();
    await redis.stop();
  });
  try {
    // 105 messages from 21 learners (5 each: the rate limit), in a known order.
    const texts = [];
    for (let i = 0; i < 21; i++) {
      const c = await joinClient(server.baseUrl, { room: ROOM, name: `L${i}` });
      clients.push(c);
      for (let j = 0; j < 5; j++) {
        const text = `m${i * 5 + j}`;
        await ok(c.socket, 'message', { text });
        texts.push(text);
      }
    }
    const late = await joinClient(server.baseUrl, { room: ROOM, name: 'Late' });
    clients.push(late);
    assert.deepEqual(late.ack.chatHistory.map((m) => m.text), texts.slice(5), 'the last 100, oldest first');
    const llen = () => Number(spawnSync('redis-cli', ['-p', String(REDIS_PORT), 'LLEN', `studyroom:chat:${ROOM}`]).stdout.toString().trim());
    await waitFor(() => llen() === 100, { what: 'the Redis list capped at 100', progress: llen });

    // The node dies; a new process on the same Redis takes the room and serves its history.
    for (const c of clients.splice(0)) c.close();
    server.signal('SIGKILL');
    await server.waitForExit(10000);
    server = await startServer({ env: { REDIS_URL: redis.url }, args: ['--node-id', 'chat-b', '--heartbeat-ms', '200', '--node-ttl-ms', '1000'] });
    // Until chat-a's registry entry expires (--node-ttl-ms) the room is still its: `moved`.
    let back = null;
    await waitFor(async () => {
      try {
        back = await joinClient(server.baseUrl, { room: ROOM, name: 'Back' });
        return true;
      } catch (e) {
        if (!/"moved"/.test(e.message)) throw e;
        return false;
      }
    }, { what: 'the restarted node takes the room', timeoutMs: 15000 });
    clients.push(back);
    assert.deepEqual(back.ack.chatHistory.map((m) => m.text), texts.slice(5), 'history from Redis after the restart');
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${server.logs().split('\n').slice(-80).join('\n')}`);
    throw e;
  }
});
