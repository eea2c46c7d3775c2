// Limits on the doors other than one socket's requests (issue 15): handshakes and live
// connections per client address (`too_many_connections`), joins per address and session
// replacements per identity (`rate_limited`), participants per node (`server_full`), and the
// client address taken from a trusted proxy header.
// Other addresses: the test's network namespace has all of 127.0.0.0/8 on loopback, so a
// client binds 127.0.0.2, 127.0.0.3, ... as its local address (socket.io-client's
// `localAddress`) and the server sees distinct peers, as it would see distinct machines.
// The file's server runs with small limits and `--trusted-proxy-header X-Forwarded-For`
// (clients that send no such header are counted by their TCP peer, the default path), and
// `--resume-window-secs 0` so a closed socket's participant leaves at once (the node count
// is asserted exactly).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { assertError, connected, devToken, harness, request, until } from './lib/signaling-harness.js';
import { studyroomBin } from './lib/server.js';

const LIMITS = {
  connectRate: 20, connectBurst: 40, perAddress: 60,
  joinRate: 10, joinBurst: 20, replacements: 3, maxParticipants: 40,
};
const h = harness(async () => {}, {
  args: [
    '--address-connect-rate', String(LIMITS.connectRate), '--address-connect-burst', String(LIMITS.connectBurst),
    '--max-connections-per-address', String(LIMITS.perAddress),
    '--address-join-rate', String(LIMITS.joinRate), '--address-join-burst', String(LIMITS.joinBurst),
    '--identity-replacements-per-minute', String(LIMITS.replacements),
    '--max-participants', String(LIMITS.maxParticipants),
    '--trusted-proxy-header', 'X-Forwarded-For',
    '--resume-window-secs', '0',
  ],
});

/** Polls an async condition (the harness's `until` takes a synchronous one). */
async function eventually(fn, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function metrics() {
  return (await fetch('http://127.0.0.1:9100/metrics')).text();
}
async function metricValue(name) {
  const line = (await metrics()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

/** A client from `from` (local address) with a fresh dev token for `room`. */
async function clientFrom(from, room, opts = {}) {
  const token = await devToken({ room, name: `c-${from}`, ...(opts.identity ? { identity: opts.identity } : {}) });
  return h.client(token.token, { localAddress: from, ...(opts.socket ?? {}) });
}

/** Connect outcome: 'ok' or the connect_error message (the error code). Call it in the
 * same tick as the socket is created, or an early connect_error is missed. */
function outcome(socket) {
  return connected(socket).then(() => 'ok', (e) => e.message);
}

/** `n` handshakes at once from `from`, each with its own token (fetched first): the
 * sockets and their outcomes, and how long the handshakes took. */
async function wave(n, from, room, socketOpts = {}) {
  const tokens = await Promise.all(Array.from({ length: n }, () => devToken({ room, name: `c-${from}` })));
  const t0 = Date.now();
  const sockets = tokens.map((t) => h.client(t.token, { localAddress: from, ...socketOpts }));
  const results = await Promise.all(sockets.map(outcome));
  return { sockets, results, ms: Date.now() - t0 };
}

/** The loadtest's JSON report: a 3-person meeting with media in `prefix`-meeting-0. */
function meeting(prefix, seconds) {
  const bin = join(dirname(studyroomBin()), 'studyroom-loadtest');
  const out = join(mkdtempSync(join(tmpdir(), 'limits-')), 'meeting.json');
  const child = spawn(bin, ['meeting', '--rooms', '1', '--per-room', '3', '--ramp', '50', '--seconds', String(seconds),
    '--room-prefix', prefix, '--json', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const done = new Promise((resolve) => child.on('exit', (code) => resolve({ code, log })));
  return { done, report: () => JSON.parse(readFileSync(out, 'utf8')) };
}

test('a connection and join flood from one address is refused; a meeting in the same room keeps its media and others join', { timeout: 90000 }, async () => {
  const prefix = 'lim';
  const room = `${prefix}-meeting-0`;
  const lg = meeting(prefix, 10);
  // The meeting (from 127.0.0.1) is in the room before the flood starts.
  await eventually(async () => (await metricValue('studyroom_participants')) >= 3, 'the meeting to join', 20000);

  // Wave 1: 150 handshakes at once from 127.0.0.2 (each with its own token).
  const { sockets: wave1, results: results1, ms: wave1Ms } = await wave(150, '127.0.0.2', room);
  const ok1 = wave1.filter((_, i) => results1[i] === 'ok');
  const refused1 = results1.filter((r) => r === 'too_many_connections').length;
  assert.equal(ok1.length + refused1, 150, `every handshake is accepted or refused with too_many_connections: ${JSON.stringify([...new Set(results1)])}`);
  assert.ok(ok1.length >= LIMITS.connectBurst && ok1.length <= LIMITS.connectBurst + LIMITS.connectRate * (wave1Ms / 1000 + 1),
    `about the burst was let in: ${ok1.length} in ${wave1Ms} ms`);

  // Every admitted socket joins at once: the address's join burst passes, the rest is refused.
  const joinsStarted = Date.now();
  const steadyJoin = (async () => {
    // Meanwhile a learner at another address joins the same room: answered, not refused.
    const steady = await clientFrom('127.0.0.3', room);
    await connected(steady);
    const t0 = Date.now();
    const ack = await request(steady, 'join', {});
    return { steady, ack, ms: Date.now() - t0 };
  })();
  const acks = await Promise.all(ok1.map((s) => request(s, 'join', {})));
  const joinsMs = Date.now() - joinsStarted;
  const joined = acks.filter((a) => a?.participant?.id).length;
  const limited = acks.filter((a) => a?.error?.code === 'rate_limited').length;
  assert.equal(joined + limited, acks.length, `joins are acked or rate_limited: ${JSON.stringify(acks.find((a) => !a?.participant && a?.error?.code !== 'rate_limited'))}`);
  assert.ok(joined >= LIMITS.joinBurst && joined <= LIMITS.joinBurst + LIMITS.joinRate * (joinsMs / 1000 + 1), `about the join burst passed: ${joined}`);
  const { steady, ack: steadyAck, ms: steadyJoinMs } = await steadyJoin;
  assert.ok(steadyAck?.participant?.id, `the learner at another address joins during the flood: ${JSON.stringify(steadyAck)}`);
  assertError(await request(steady, 'mute', { trackId: '1', muted: true }), 'unknown_track', 'the steady learner is answered');

  // Wave 2 after the connect bucket refilled: the live-connection cap (60) now refuses.
  await new Promise((r) => setTimeout(r, (LIMITS.connectBurst / LIMITS.connectRate) * 1000 + 200));
  const liveCapBefore = (await metrics()).match(/studyroom_address_connections_refused_total\{reason="live_cap"\} (\d+)/);
  const { results: results2 } = await wave(LIMITS.connectBurst, '127.0.0.2', room);
  const ok2 = results2.filter((r) => r === 'ok').length;
  assert.equal(ok1.length + ok2, LIMITS.perAddress, `the address holds exactly --max-connections-per-address (${ok1.length} + ${ok2})`);
  assert.ok(results2.every((r) => r === 'ok' || r === 'too_many_connections'));

  // The meeting kept its media through all of it.
  const { code, log } = await lg.done;
  assert.equal(code, 0, `the load generator finished:\n${log.slice(-2000)}`);
  const rep = lg.report();
  const media = rep.media_result;
  assert.equal(rep.joins.acked, rep.joins.attempted, `every meeting join acked: ${JSON.stringify(rep.joins)}`);
  assert.ok(media.receivers > 0 && media.receivers_with_media === media.receivers, `every meeting participant received media: ${JSON.stringify(media).slice(0, 400)}`);
  assert.equal(media.streams_with_media, media.streams_offered, 'every offered stream carried media');

  const text = await metrics();
  const rate = Number(text.match(/studyroom_address_connections_refused_total\{reason="rate"\} (\d+)/)[1]);
  const liveCap = Number(text.match(/studyroom_address_connections_refused_total\{reason="live_cap"\} (\d+)/)[1]);
  assert.ok(rate >= refused1, `refusals for the rate counted: ${rate}`);
  assert.equal(liveCap - Number(liveCapBefore[1]), LIMITS.connectBurst - ok2, 'refusals for the live cap counted');
  assert.ok(await metricValue('studyroom_address_joins_refused_total') >= limited);
  const warnings = h.server.logs().split('\n').filter((l) => l.includes('limit of one client address reached'));
  assert.ok(warnings.length >= 2 && warnings.length < 20, `logged when an address starts being refused, not per refusal: ${warnings.length}`);
  console.log(`address flood: wave 1 ${ok1.length}/150 connected in ${wave1Ms} ms (${refused1} too_many_connections); joins ${joined} acked, ${limited} rate_limited in ${joinsMs} ms; wave 2 ${ok2}/${LIMITS.connectBurst} (live cap ${LIMITS.perAddress}); `
    + `steady learner's join ack ${steadyJoinMs} ms; meeting: ${media.receivers_with_media}/${media.receivers} receivers with media, loss ${(media.loss * 100).toFixed(2)} % (window ${(media.window_loss * 100).toFixed(2)} %), its join acks ${JSON.stringify(rep.joins.join_ack_ms)} ms`);
  h.assertAlive();
});

test('an identity may replace its own session a few times a minute, then the live session stays', async () => {
  const room = 'lim-identity';
  const identity = 'twin-tabs';
  const sessions = [];
  for (let i = 0; i <= LIMITS.replacements; i++) {
    const s = await clientFrom('127.0.0.4', room, { identity });
    await connected(s);
    const ack = await request(s, 'join', {});
    assert.ok(ack?.participant?.id, `join ${i} (${i === 0 ? 'first' : 'replacement'}) accepted: ${JSON.stringify(ack)}`);
    sessions.push(s);
  }
  // Each replacement disconnected the previous session.
  await until(() => sessions.slice(0, -1).every((s) => !s.connected), 'replaced sessions to be disconnected');
  const live = sessions.at(-1);
  const refusedBefore = await metricValue('studyroom_identity_replacements_refused_total');
  const extra = await clientFrom('127.0.0.4', room, { identity });
  await connected(extra);
  assertError(await request(extra, 'join', {}), 'rate_limited', 'a replacement past the limit');
  // The live session is untouched: still connected and joined.
  assert.ok(live.connected, 'the live session stays');
  assertError(await request(live, 'mute', { trackId: '1', muted: true }), 'unknown_track', 'the live session is still joined');
  assert.equal(await metricValue('studyroom_identity_replacements_refused_total'), refusedBefore + 1);
  // Another identity at the same address is not affected.
  const other = await clientFrom('127.0.0.4', room);
  await connected(other);
  assert.ok((await request(other, 'join', {}))?.participant?.id);
});

test('past --max-participants joins get server_full until someone leaves', async () => {
  await eventually(async () => (await metricValue('studyroom_participants')) === 0, 'the node to be empty after earlier tests');
  const room = 'lim-full';
  const joinedSockets = [];
  // 40 participants from 4 addresses (10 each: within every address's join burst).
  for (let i = 0; i < LIMITS.maxParticipants; i++) {
    const s = await clientFrom(`127.0.0.${10 + (i % 4)}`, `${room}-${i % 3}`);
    await connected(s);
    const ack = await request(s, 'join', {});
    assert.ok(ack?.participant?.id, `join ${i} under the cap: ${JSON.stringify(ack)}`);
    joinedSockets.push(s);
  }
  const fullBefore = await metricValue('studyroom_joins_refused_server_full_total');
  const late = await clientFrom('127.0.0.20', room);
  await connected(late);
  assertError(await request(late, 'join', {}), 'server_full', 'the 41st participant');
  assert.equal(await metricValue('studyroom_joins_refused_server_full_total'), fullBefore + 1);
  // One leaves: there is room again.
  assert.ok((await request(joinedSockets[0], 'leave', {}))?.ok);
  await eventually(async () => (await metricValue('studyroom_participants')) === LIMITS.maxParticipants - 1, 'the leaver to be gone');
  const again = await clientFrom('127.0.0.20', room);
  await connected(again);
  assert.ok((await request(again, 'join', {}))?.participant?.id, 'a join fits once someone left');
});

test('behind a proxy the trusted header is the client address: one flooding client does not lock out the others', async () => {
  const room = 'lim-proxy';
  // All from 127.0.0.30 (the proxy), with the header the proxy appends last.
  const via = (client) => ({ extraHeaders: { 'X-Forwarded-For': `198.51.100.1, ${client}` } });
  const { results } = await wave(80, '127.0.0.30', room, via('203.0.113.66'));
  const refused = results.filter((r) => r === 'too_many_connections').length;
  assert.ok(refused >= 80 - LIMITS.connectBurst - LIMITS.connectRate * 2, `the flooding client is refused: ${refused}`);
  // Another client through the same proxy is let in at once.
  const other = await clientFrom('127.0.0.30', room, { socket: via('203.0.113.77') });
  assert.equal(await outcome(other), 'ok', 'a different client behind the same proxy connects');
  assert.ok((await request(other, 'join', {}))?.participant?.id);
});
