// Bad input over signaling against a real `studyroom --dev` (docs/protocol.md, Error codes):
// media events before `join`, unknown events, payloads of the wrong shape or size, SDP that
// is not SDP, an answer nobody asked for, someone else's track, a publish without the grant.
// Each gets its error code, only the offender hears of it, and the server keeps serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { handOffer, HAND_TRACKS } from './lib/hand-sdp.js';
import { assertError, connected, devToken, harness, received, request, until } from './lib/signaling-harness.js';

const ROOM = 'bad-input-room';
let bystander; // joined to ROOM for the whole file: must never see an error or lose its session
const h = harness(async (h) => {
  bystander = await h.joined({ room: ROOM, name: 'Bystander', role: 'learner' });
  bystander.socket.keep = true;
});

test('media events before join get not_joined', async () => {
  const socket = h.client((await devToken({ room: ROOM, name: 'Early', role: 'learner' })).token);
  await connected(socket);
  const early = {
    publish: { sdp: handOffer(), tracks: HAND_TRACKS },
    unpublish: { trackId: 't1' },
    mute: { trackId: 't1', muted: true },
    answer: { sdp: 'v=0\r\n' },
    ice: { target: 'publisher', candidate: null },
  };
  for (const [event, payload] of Object.entries(early)) {
    assertError(await request(socket, event, payload), 'not_joined', `${event} before join`);
  }
  assert.ok(!(await request(socket, 'join', {})).error, 'join after the refused events');
});

test('unknown events get bad_request: pushed without an ack, acked with one', async () => {
  const { socket } = await h.joined({ room: ROOM, name: 'Curious', role: 'learner' });
  socket.emit('teleport', { to: 'moon' });
  const pushed = await until(() => received(socket, 'error')[0], "an 'error' event for an unknown event");
  assert.equal(pushed.code, 'bad_request', JSON.stringify(pushed));
  assert.equal(typeof pushed.message, 'string');
  assertError(await request(socket, 'teleport', { to: 'moon' }), 'bad_request', 'unknown event with ack');
  assertError(await request(socket, 'Join', {}), 'bad_request', 'event names are case-sensitive');
});

test('payloads of the wrong shape or type get bad_request', async () => {
  const { socket } = await h.joined({ room: ROOM, name: 'Sloppy', role: 'learner' });
  const cases = [ // [what is wrong, event, ...arguments]
    ['sdp is a number', 'publish', { sdp: 42, tracks: HAND_TRACKS }],
    ['tracks missing', 'publish', { sdp: handOffer() }],
    ['tracks is a string', 'publish', { sdp: handOffer(), tracks: 'camera' }],
    ['mid is a number', 'publish', { sdp: handOffer(), tracks: [{ mid: 0, source: 'camera' }] }],
    ['unknown source', 'publish', { sdp: handOffer(), tracks: [{ mid: '1', source: 'webcam' }] }],
    ['payload is a string', 'publish', 'v=0'],
    ['no payload', 'publish'],
    ['muted is a string', 'mute', { trackId: 't1', muted: 'yes' }],
    ['trackId missing', 'mute', { muted: true }],
    ['trackId is a number', 'unpublish', { trackId: 7 }],
    ['sdp is null', 'answer', { sdp: null }],
    ['unknown target', 'ice', { target: 'both', candidate: null }],
    ['candidate is a string', 'ice', { target: 'publisher', candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host' }],
    ['payload is an array', 'ice', [1, 2, 3]],
  ];
  const wrong = []; // every case is tried, then all mismatches are reported together
  for (const [what, event, ...args] of cases) {
    const ack = await request(socket, event, ...args);
    if (ack?.error?.code !== 'bad_request' || typeof ack.error.message !== 'string') {
      wrong.push(`${event} with ${what} -> ${JSON.stringify(ack).slice(0, 160)}`);
    }
  }
  assert.deepEqual(wrong, [], `expected bad_request:\n${wrong.join('\n')}`);
  assert.equal(socket.connected, true);
});

test('an oversized SDP gets payload_too_large', async () => {
  for (const kib of [70, 200]) {
    const { socket } = await h.joined({ room: ROOM, name: `Big${kib}`, role: 'learner' });
    const sdp = handOffer() + `a=x-filler:${'x'.repeat(kib * 1024)}\r\n`;
    assertError(await request(socket, 'publish', { sdp, tracks: HAND_TRACKS }), 'payload_too_large', `${kib} KiB SDP`);
    assertError(await request(socket, 'answer', { sdp }), 'payload_too_large', `${kib} KiB answer`);
  }
});

test('SDP that is not SDP gets bad_sdp', async () => {
  const { socket } = await h.joined({ room: ROOM, name: 'Garbled', role: 'learner' });
  const junk = ['hello world', 'v=0\r\nm=video banana\r\n', handOffer().replace(/^m=.*$/gm, 'm=')];
  for (const sdp of junk) {
    assertError(await request(socket, 'publish', { sdp, tracks: HAND_TRACKS }), 'bad_sdp', `publish ${JSON.stringify(sdp.slice(0, 30))}`);
  }
});

test('an answer without a pending offer gets no_offer_pending', async () => {
  const { socket } = await h.joined({ room: 'lonely-room', name: 'Alone', role: 'learner' });
  assert.equal(received(socket, 'offer').length, 0, 'the server offered to a lone participant');
  const answer = handOffer().replace(/a=setup:actpass/g, 'a=setup:active').replace(/a=sendonly/g, 'a=recvonly');
  assertError(await request(socket, 'answer', { sdp: answer }), 'no_offer_pending', 'answer with no offer');
});

test("muting or unpublishing a track that is not yours gets unknown_track", async () => {
  const { socket } = await h.joined({ room: ROOM, name: 'Grabby', role: 'learner' });
  assertError(await request(socket, 'mute', { trackId: 'no-such-track', muted: true }), 'unknown_track', 'mute');
  assertError(await request(socket, 'unpublish', { trackId: 'no-such-track' }), 'unknown_track', 'unpublish');
  // A track that exists but belongs to someone else.
  const owner = await h.joined({ room: ROOM, name: 'Owner', role: 'learner' });
  const pub = await request(owner.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error && pub.tracks?.length === 2, `hand-written publish failed: ${JSON.stringify(pub)}`);
  for (const t of pub.tracks) {
    assertError(await request(socket, 'mute', { trackId: t.id, muted: true }), 'unknown_track', `mute ${t.kind} of Owner`);
    assertError(await request(socket, 'unpublish', { trackId: t.id }), 'unknown_track', `unpublish ${t.kind} of Owner`);
  }
  assert.ok(!received(owner.socket, 'trackMuted').length && !received(bystander.socket, 'trackMuted').length,
    'a refused mute was announced');
});

test('publishing without the publish grant gets forbidden', async () => {
  for (const query of [{ role: 'proctor' }, { role: 'learner', publish: '0' }]) {
    const { socket } = await h.joined({ room: ROOM, name: 'NoPub', ...query });
    assertError(await request(socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS }), 'forbidden', JSON.stringify(query));
  }
});

test('after all that, errors reached only the offenders and the server serves normally', async () => {
  h.assertAlive();
  assert.deepEqual(received(bystander.socket, 'error'), [], 'the bystander received errors');
  assert.equal(bystander.socket.connected, true, 'the bystander lost its connection');
  const fresh = await h.joined({ room: ROOM, name: 'Fresh', role: 'learner' });
  assert.ok(fresh.ack.participants.some((p) => p.id === bystander.ack.participant.id), 'the fresh client does not see the bystander');
  const id = fresh.ack.participant.id;
  await until(() => received(bystander.socket, 'participantJoined').find((p) => p.id === id), 'participantJoined(Fresh) at the bystander');
  assertError(await request(fresh.socket, 'join', {}), 'already_joined', 'fresh client joining twice');
});
