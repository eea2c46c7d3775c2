// Session resume with socket.io-client against a real `studyroom --dev` (docs/protocol.md,
// "Resuming a session"): a socket that drops without `leave` keeps its participant for the
// resume window; `resume {resumeToken}` on a new socket continues it (same id, the ack first,
// then everything pushed meanwhile, in order); tokens are single-use and bound to the
// identity; bad payloads are refused without side effects; the window's end, a fresh join
// of the same identity and `leave` still remove the participant; metrics count it all.
// Why socket.io-client: the drop must be abrupt (the engine closed under the socket, no
// namespace DISCONNECT, no `leave`), and every push must be seen in the order it arrived.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startServer } from './lib/server.js';
import { answerFor, handOffer, HAND_TRACKS } from './lib/hand-sdp.js';
import { assertError, until } from './lib/signaling-harness.js';
import { devToken, ok } from './lib/sio-client.js';

let server;
const sockets = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const s of sockets) s.close();
  if (server) await server.stop();
});

/** Logs the server's output under a failing test. */
async function run(t, srv, fn) {
  try {
    await fn();
  } catch (e) {
    console.log(`---- studyroom log (${srv.baseUrl}) ----\n${srv.logs().split('\n').slice(-200).join('\n')}\n----`);
    throw e;
  }
}

/**
 * A socket on /study with `token`. `log` holds, in arrival order, every push as
 * {event, data} and every ack of `call` as {ack, data}: acks are recorded from inside the
 * packet handler, so the log shows exactly what came before and after an ack.
 */
async function connect(baseUrl, token) {
  const socket = io(`${baseUrl}/study`, {
    auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000,
  });
  sockets.push(socket);
  const log = [];
  socket.onAny((event, data) => log.push({ event, data }));
  socket.on('disconnect', (reason) => { socket.disconnectReason = reason; });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', (e) => reject(new Error(`connect refused: ${e.message}`)));
  });
  /** Emits `event` with an ack; resolves with the ack, which is also appended to `log`. */
  const call = (event, ...payload) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${event} within 5 s`)), 5000);
    socket.emit(event, ...payload, (data) => {
      clearTimeout(timer);
      log.push({ ack: event, data });
      resolve(data);
    });
  });
  return { socket, log, call, pushes: (ev) => log.filter((m) => m.event === ev).map((m) => m.data) };
}

/** Connects with a fresh dev token and joins. */
async function joined(baseUrl, room, name) {
  const t = await devToken(baseUrl, { room, name, role: 'learner' });
  const c = await connect(baseUrl, t.token);
  const ack = await c.call('join', {});
  assert.ok(ack && !ack.error, `${name}: join refused: ${JSON.stringify(ack)}`);
  return { ...c, ack, token: t.token, identity: t.identity, id: ack.participant.id };
}

/** The metrics listener's samples as a map: `name{labels}` -> number. */
async function metrics(port) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new Map();
  for (const line of text.split('\n')) {
    const s = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (s) m.set(s[1], Number(s[2]));
  }
  return m;
}
const removals = (m, reason) => m.get(`studyroom_participant_removals_total{reason="${reason}"}`);

/** Drops a client's connection abruptly: the engine closes, no DISCONNECT packet, no leave. */
function drop(c) {
  c.socket.io.engine.close();
}

/** Waits for the server's log to say it kept `id` for a resume. */
async function detached(srv, id) {
  await until(() => srv.logs().split('\n').some((l) => l.includes('participant kept for resume') && l.includes(`participant=${id}`)),
    `the server to detach ${id}`);
}

const ROOM_EVENTS = new Set(['participantJoined', 'participantLeft', 'trackPublished', 'trackUnpublished', 'trackMuted']);

test('a dropped socket resumes its participant: same id, the ack first, then every push made meanwhile, in order', (t) => run(t, server, async () => {
  const base = server.baseUrl;
  const room = 'resume-room';
  const before = await metrics(9100);
  const a = await joined(base, room, 'Ada');
  assert.equal(typeof a.ack.resumeToken, 'string', `join ack without resumeToken: ${JSON.stringify(a.ack)}`);
  assert.ok(a.ack.resumeToken.length >= 32, 'the resume token is long enough to be unguessable');
  assert.equal(a.ack.resumeWindowMs, 15000);
  const b = await joined(base, room, 'Bob');
  await until(() => a.pushes('participantJoined').some((p) => p.id === b.id), 'participantJoined(Bob) at Ada');

  drop(a);
  await detached(server, a.id);
  const bFrom = b.log.length; // what Bob hears from now on, Ada must get after her resume

  // While Ada has no socket: Bob publishes (room events + a subscriber offer for Ada), Cy
  // joins, Bob mutes his camera.
  const pub = await ok(b.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  const cy = await joined(base, room, 'Cy');
  const camera = pub.tracks.find((x) => x.source === 'camera');
  await ok(b.socket, 'mute', { trackId: camera.id, muted: true });
  await until(() => b.pushes('trackMuted').some((m) => m.id === camera.id), 'trackMuted at Bob');

  // Ada comes back on a new socket with the same JWT.
  const a2 = await connect(base, a.token);
  const ack = await a2.call('resume', { resumeToken: a.ack.resumeToken });
  assert.ok(!ack.error, `resume refused: ${JSON.stringify(ack)}`);
  assert.equal(ack.resumed, true);
  assert.equal(ack.participant.id, a.id, 'the same participant continues');
  assert.equal(ack.resumeWindowMs, 15000);
  assert.equal(typeof ack.resumeToken, 'string');
  assert.notEqual(ack.resumeToken, a.ack.resumeToken, 'a fresh token with every resume');
  assert.deepEqual(ack.participants.map((p) => p.id).sort(), [b.id, cy.id].sort(), 'ack lists the others as join would');
  assert.ok(Array.isArray(ack.iceServers));
  assert.deepEqual(a2.log[0], { ack: 'resume', data: ack }, `something came before the resume ack: ${JSON.stringify(a2.log[0])}`);

  // The queue: the same room events Bob saw, in the same order, plus Ada's own offer.
  const bobSaw = () => b.log.slice(bFrom).filter((m) => ROOM_EVENTS.has(m.event));
  const adaGot = () => a2.log.slice(1).filter((m) => ROOM_EVENTS.has(m.event));
  await until(() => adaGot().length >= bobSaw().length && a2.pushes('offer').length > 0, 'the queued pushes at Ada');
  assert.deepEqual(adaGot(), bobSaw(), 'Ada got the room events Bob got, in order');
  assert.ok(bobSaw().some((m) => m.event === 'participantJoined' && m.data.id === cy.id));
  // The offer made while Ada was away (one outstanding offer at a time: it maps the first of
  // Bob's tracks), replayed after the ack.
  const offer = a2.pushes('offer')[0];
  const mapped = (o) => o.tracks.map((x) => x.trackId).filter(Boolean);
  const bobTracks = pub.tracks.map((x) => x.id);
  assert.ok(mapped(offer).length > 0 && mapped(offer).every((id) => bobTracks.includes(id)),
    `the queued offer maps Bob's tracks: ${JSON.stringify(offer.tracks)}`);
  assert.ok(a2.log.findIndex((m) => m.event === 'offer') > 0, 'the offer came after the ack');
  // The resumed participant works on its new socket: it answers, and the next offer (the
  // rest of Bob's tracks) comes to it.
  assert.deepEqual(await a2.call('answer', { sdp: answerFor(offer.sdp) }), { ok: true });
  const next = await until(() => a2.pushes('offer')[1], 'the next offer at Ada');
  assert.deepEqual(mapped(next).sort(), [...bobTracks].sort(), 'the next offer maps all of Bob\'s tracks');
  assert.deepEqual(await a2.call('answer', { sdp: answerFor(next.sdp) }), { ok: true });

  // Bob and Cy never saw Ada leave or join again. Barrier: a later join reaches them after
  // anything about Ada would have.
  const di = await joined(base, room, 'Di');
  await until(() => b.pushes('participantJoined').some((p) => p.id === di.id), 'participantJoined(Di) at Bob');
  await until(() => a2.pushes('participantJoined').some((p) => p.id === di.id), 'participantJoined(Di) at Ada (attached again)');
  for (const [who, c] of [['Bob', b], ['Cy', cy]]) {
    assert.ok(!c.pushes('participantLeft').some((m) => m.id === a.id), `${who} saw Ada leave`);
    assert.ok(!c.pushes('participantJoined').some((p) => p.id === a.id), `${who} saw Ada join again`);
  }

  // Tokens are single-use: the first one is spent.
  const again = await connect(base, a.token);
  assertError(await again.call('resume', { resumeToken: a.ack.resumeToken }), 'resume_failed', 'a spent token');
  assert.equal(again.socket.connected, true, 'a refused resume leaves the socket open (it may join)');

  const m = await metrics(9100);
  assert.equal(m.get('studyroom_session_resumes_total') - (before.get('studyroom_session_resumes_total') ?? 0), 1, 'one resume counted');
  assert.equal(removals(m, 'disconnected'), removals(before, 'disconnected'), 'the drop counted no removal');
}));

test('bad resume payloads are refused with bad_request / resume_failed and change nothing', (t) => run(t, server, async () => {
  const base = server.baseUrl;
  const room = 'resume-bad';
  const a = await joined(base, room, 'Ada');
  const b = await joined(base, room, 'Bob');
  const stranger = await devToken(base, { room, name: 'Eve', role: 'learner' });
  const elsewhere = await devToken(base, { room: 'resume-other', name: 'Ada2', role: 'learner' });
  drop(a);
  await detached(server, a.id);

  const s = await connect(base, a.token);
  assertError(await s.call('resume'), 'bad_request', 'no payload');
  assertError(await s.call('resume', {}), 'bad_request', 'no resumeToken');
  assertError(await s.call('resume', 'token'), 'bad_request', 'a string payload');
  assertError(await s.call('resume', { resumeToken: 42 }), 'bad_request', 'a number as token');
  assertError(await s.call('resume', { resumeToken: '' }), 'bad_request', 'an empty token');
  assertError(await s.call('resume', { resumeToken: 'x'.repeat(200) }), 'bad_request', 'a long token');
  assertError(await s.call('resume', { resumeToken: 'not-a-token' }), 'resume_failed', 'an unknown token');
  // Another identity, or the same name in another room, cannot take Ada's session.
  const eve = await connect(base, stranger.token);
  assertError(await eve.call('resume', { resumeToken: a.ack.resumeToken }), 'resume_failed', 'another identity');
  const other = await connect(base, elsewhere.token);
  assertError(await other.call('resume', { resumeToken: a.ack.resumeToken }), 'resume_failed', 'another room');
  // A joined socket cannot resume.
  assertError(await b.call('resume', { resumeToken: a.ack.resumeToken }), 'already_joined', 'resume after join');
  for (const c of [s, eve, other, b]) assert.equal(c.socket.connected, true, 'refusals keep the socket');

  // None of that burnt Ada's token or touched the room.
  const ack = await s.call('resume', { resumeToken: a.ack.resumeToken });
  assert.equal(ack.resumed, true, `Ada could not resume after the refusals: ${JSON.stringify(ack)}`);
  assert.equal(ack.participant.id, a.id);
  assert.ok(!b.pushes('participantLeft').length && !b.pushes('participantJoined').length,
    `Bob heard of it: ${JSON.stringify(b.log.filter((m) => m.event))}`);
}));

test('a detached participant is replaced at once when its identity joins afresh', (t) => run(t, server, async () => {
  const base = server.baseUrl;
  const room = 'resume-replaced';
  const before = await metrics(9100);
  const a = await joined(base, room, 'Ada');
  const b = await joined(base, room, 'Bob');
  drop(a);
  await detached(server, a.id);
  // A reloaded page joins with the same identity instead of resuming.
  const a2 = await connect(base, a.token);
  const ack = await a2.call('join', {});
  assert.ok(!ack.error && ack.participant.id !== a.id, JSON.stringify(ack));
  const left = await until(() => b.pushes('participantLeft').find((m) => m.id === a.id), 'participantLeft(old Ada) at Bob');
  assert.deepEqual(left, { id: a.id, reason: 'replaced' });
  const late = await connect(base, a.token);
  assertError(await late.call('resume', { resumeToken: a.ack.resumeToken }), 'resume_failed', 'the replaced session\'s token');
  const m = await metrics(9100);
  assert.equal(removals(m, 'replaced') - removals(before, 'replaced'), 1);
}));

test('not resumed within --resume-window-secs: removed as "disconnected"; leave still removes at once; metrics count both', async (t) => {
  // A second server with a 2 s window (its own ports; no TURN, the first one holds those).
  const short = await startServer({
    http: '127.0.0.1:5003',
    args: ['--resume-window-secs', '2', '--metrics', '127.0.0.1:9101', '--media-ports', '40200-40300', '--no-turn'],
  });
  t.after(() => short.stop());
  await run(t, short, async () => {
    const base = short.baseUrl;
    const room = 'resume-expiry';
    const a = await joined(base, room, 'Ada');
    assert.equal(a.ack.resumeWindowMs, 2000);
    const b = await joined(base, room, 'Bob');
    const c = await joined(base, room, 'Cy');
    const droppedAt = Date.now();
    drop(a);
    const left = await until(() => b.pushes('participantLeft').find((m) => m.id === a.id), 'participantLeft(Ada) at Bob', 8000);
    const after = Date.now() - droppedAt;
    assert.deepEqual(left, { id: a.id, reason: 'disconnected' });
    assert.ok(after >= 1900, `Ada was removed ${after} ms after her drop, before the 2 s window ended`);
    const late = await connect(base, a.token);
    assertError(await late.call('resume', { resumeToken: a.ack.resumeToken }), 'resume_failed', 'a resume after the window');

    // `leave` is not a drop: Cy goes at once.
    assert.deepEqual(await c.call('leave', {}), { ok: true });
    const cyLeft = await until(() => b.pushes('participantLeft').find((m) => m.id === c.id), 'participantLeft(Cy) at Bob', 1500);
    assert.equal(cyLeft.reason, 'left');

    const m = await metrics(9101);
    assert.equal(removals(m, 'disconnected'), 1, 'the expired participant');
    assert.equal(removals(m, 'left'), 1, 'the leaver');
    for (const r of ['timeout', 'transport_failed', 'replaced', 'removed', 'room_closed']) {
      assert.equal(removals(m, r), 0, `removals{reason="${r}"} is exported`);
    }
    assert.equal(m.get('studyroom_session_resumes_total'), 0);
  });
});
