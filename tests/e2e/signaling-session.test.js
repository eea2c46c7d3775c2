// Signaling sessions with socket.io-client against a real `studyroom --dev` (docs/protocol.md):
// the token check at the handshake (missing, garbage, wrong secret, tampered, alg none,
// expired), a `join` emitted the moment the socket connects, the `join` acknowledgement and
// the participantJoined/participantLeft pushes, a second `join` on one socket, and `leave`
// versus a clean disconnect (an abrupt one is resumable: signaling-resume.test.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { assertError, connected, devToken, harness, received, request, until } from './lib/signaling-harness.js';

const h = harness();

const b64url = (s) => Buffer.from(s).toString('base64url');
function signJwt(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}
const jwtClaims = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());

/** Connects with `auth` and expects the handshake to be refused with `code`. */
async function expectRefused(auth, code, what) {
  const socket = h.client(undefined, { auth });
  const err = await connected(socket).then(
    () => assert.fail(`${what}: the handshake was accepted`),
    (e) => e,
  );
  assert.equal(err.message, code, `${what}: connect_error message`);
  assert.equal(socket.connected, false);
}

test('a handshake without a token is refused with missing_token', async () => {
  await expectRefused({}, 'missing_token', 'empty auth');
  await expectRefused({ token: '' }, 'missing_token', 'empty token');
  const noAuth = h.client(undefined, { auth: undefined });
  const err = await connected(noAuth).then(() => assert.fail('accepted without auth'), (e) => e);
  assert.equal(err.message, 'missing_token', 'no auth at all');
});

test('a bad token is refused with invalid_token', async () => {
  await expectRefused({ token: 'not-a-jwt' }, 'invalid_token', 'garbage string');
  const exp = Math.floor(Date.now() / 1000) + 600;
  const claims = { sub: 'mallory', name: 'Mallory', room: 'auth-room', role: 'learner', exp };
  await expectRefused({ token: signJwt(claims, 'not-the-server-secret') }, 'invalid_token', 'wrong secret');
  const none = `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}.`;
  await expectRefused({ token: none }, 'invalid_token', 'alg none');
  // A real dev token whose claims were edited after signing (signature kept).
  const real = (await devToken({ room: 'auth-room', name: 'Eve', role: 'learner' })).token;
  const [head, , sig] = real.split('.');
  const edited = { ...jwtClaims(real), role: 'proctor', name: 'Eve the proctor' };
  await expectRefused({ token: `${head}.${b64url(JSON.stringify(edited))}.${sig}` }, 'invalid_token', 'tampered claims');
  // The untouched token is fine: the refusals above were about the tokens.
  const ok = h.client(real);
  await connected(ok);
});

test('a token that is not a string is refused with invalid_token', async () => {
  await expectRefused({ token: 42 }, 'invalid_token', 'a number as token');
  await expectRefused({ token: { sub: 'x' } }, 'invalid_token', 'an object as token');
});

test('an expired token is refused with token_expired', async () => {
  const { token } = await devToken({ room: 'auth-room', name: 'Late', role: 'learner', ttl: '-60' });
  assert.ok(jwtClaims(token).exp < Date.now() / 1000, `dev token with ttl=-60 is not expired: ${JSON.stringify(jwtClaims(token))}`);
  await expectRefused({ token }, 'token_expired', 'exp in the past');
});

test('a join sent the moment the socket connects is always answered', async () => {
  // Browsers emit `join` right in their connect handler; the server must already listen.
  for (let i = 0; i < 40; i++) {
    const { token } = await devToken({ room: `eager-${i}`, name: `Eager${i}`, role: 'learner' });
    const socket = h.client(token);
    await connected(socket);
    const ack = await request(socket, 'join', {}).catch((e) => assert.fail(`client #${i + 1}: ${e.message}`));
    assert.ok(ack.participant, `client #${i + 1}: ${JSON.stringify(ack)}`);
    socket.close();
  }
});

function assertParticipant(p, want) {
  assert.equal(typeof p?.id, 'string', `participant without id: ${JSON.stringify(p)}`);
  assert.ok(p.id.length > 0);
  for (const k of ['identity', 'name']) assert.equal(typeof p[k], 'string', `participant.${k}: ${JSON.stringify(p)}`);
  assert.ok(['learner', 'proctor'].includes(p.role), `participant.role: ${JSON.stringify(p)}`);
  assert.ok(Number.isFinite(p.joinedAt) && Math.abs(p.joinedAt - Date.now()) < 60_000,
    `participant.joinedAt is not ms since the epoch of about now: ${JSON.stringify(p)}`);
  assert.ok(Array.isArray(p.tracks), `participant.tracks: ${JSON.stringify(p)}`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(p[k], v, `participant.${k} in ${JSON.stringify(p)}`);
}

function assertJoinAck(ack, token, name, role) {
  assertParticipant(ack.participant, { identity: token.identity, name, role, tracks: [] });
  assert.ok(Array.isArray(ack.participants), `join ack without participants: ${JSON.stringify(ack)}`);
  ack.participants.forEach((p) => assertParticipant(p, {}));
  assert.ok(Array.isArray(ack.iceServers), `join ack without iceServers: ${JSON.stringify(ack)}`);
  for (const s of ack.iceServers) {
    const urls = [s.urls].flat();
    assert.ok(urls.length > 0 && urls.every((u) => /^(stun|turns?):/.test(u)), `bad RTCIceServer ${JSON.stringify(s)}`);
  }
}

test('two clients join: ack shape, participantJoined, second join refused', async () => {
  const room = 'join-room';
  const ta = await devToken({ room, name: 'Ada', role: 'learner' });
  // Both learners: a proctor would be invisible to A (see browser-proctor.test.js).
  const tb = await devToken({ room, name: 'Bob', role: 'learner' });
  assert.equal(ta.room, room);
  const a = h.client(ta.token);
  await connected(a);
  const ackA = await request(a, 'join', {});
  assertJoinAck(ackA, ta, 'Ada', 'learner');
  const idA = ackA.participant.id;
  assert.ok(ackA.participants.every((p) => p.id === idA), `A joined an empty room but sees ${JSON.stringify(ackA.participants)}`);

  // B uses the default transports (HTTP long-polling, then the WebSocket upgrade).
  const b = h.client(tb.token, { transports: undefined });
  await connected(b);
  const ackB = await request(b, 'join', {});
  assertJoinAck(ackB, tb, 'Bob', 'learner');
  const idB = ackB.participant.id;
  assert.notEqual(idA, idB);
  const seenA = ackB.participants.find((p) => p.id === idA);
  assert.ok(seenA, `B's join ack does not list A: ${JSON.stringify(ackB.participants)}`);
  assertParticipant(seenA, { identity: ta.identity, name: 'Ada', role: 'learner' });

  const pushed = await until(() => received(a, 'participantJoined').find((p) => p.id === idB), 'participantJoined(B) at A');
  assertParticipant(pushed, { identity: tb.identity, name: 'Bob', role: 'learner' });
  assert.ok(!received(a, 'participantJoined').some((p) => p.id === idA), 'A was told about its own join');

  assertError(await request(a, 'join', {}), 'already_joined', 'second join on the same socket');
  assert.equal(a.connected, true, 'the refused second join closed the socket');
  assert.ok(!received(b, 'participantLeft').length, 'the refused second join made A leave');
});

// A transport that just goes away (no DISCONNECT packet) keeps its participant for the resume
// window: signaling-resume.test.js.
test('a clean disconnect tells the others participantLeft "disconnected" at once', async () => {
  const room = 'disconnect-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const idB = b.ack.participant.id;

  b.socket.disconnect(); // namespace DISCONNECT packet
  const leftB = await until(() => received(a.socket, 'participantLeft').find((p) => p.id === idB), 'participantLeft(B) at A');
  assert.deepEqual(leftB, { id: idB, reason: 'disconnected' });

  // A new client sees only A in the room.
  const d = await h.joined({ room, name: 'Di', role: 'learner' });
  const others = d.ack.participants.map((p) => p.id).filter((id) => id !== d.ack.participant.id);
  assert.deepEqual(others, [a.ack.participant.id]);
});

test('leave: ack {ok:true}, then the server disconnects; others get participantLeft "left"', async () => {
  const room = 'leave-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const idB = b.ack.participant.id;

  assert.deepEqual(await request(b.socket, 'leave', {}), { ok: true });
  await until(() => b.socket.disconnectReason, 'the server to disconnect B after leave');
  assert.equal(b.socket.disconnectReason, 'io server disconnect');
  const left = await until(() => received(a.socket, 'participantLeft').find((p) => p.id === idB), 'participantLeft(B) at A');
  assert.deepEqual(left, { id: idB, reason: 'left' });
  // Barrier: once A hears of a later join, a duplicate participantLeft(B) would have arrived.
  const c = await h.joined({ room, name: 'Cy', role: 'learner' });
  await until(() => received(a.socket, 'participantJoined').find((p) => p.id === c.ack.participant.id), 'participantJoined(C) at A');
  assert.equal(received(a.socket, 'participantLeft').filter((p) => p.id === idB).length, 1, 'B left twice');
  assert.ok(!c.ack.participants.some((p) => p.id === idB), 'B is still listed after leave');
});
