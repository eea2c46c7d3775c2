// Bad input over signaling against a real `studyroom --dev` (docs/protocol.md, Error codes):
// media events before `join`, unknown events, payloads of the wrong shape or size, SDP that
// is not SDP, an answer nobody asked for, someone else's track, a publish without the grant.
// Each gets its error code, only the offender hears of it, and the server keeps serving.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { io } from 'socket.io-client';

const BASE = 'http://127.0.0.1:5002';
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

/**
 * A hand-written publisher offer shaped like Chromium's: mid 0 = opus audio, mid 1 = VP8
 * video with RTX, both sendonly, BUNDLEd, DTLS actpass. Enough for the server to negotiate
 * an answer; no media ever flows from it. Renegotiations need a higher `version`.
 */
function handOffer(version = 2) {
  const fp = Array.from({ length: 32 }, (_, i) => ((i * 37 + 11) & 0xff).toString(16).padStart(2, '0').toUpperCase()).join(':');
  const common = (mid) => [
    'c=IN IP4 0.0.0.0', 'a=rtcp:9 IN IP4 0.0.0.0',
    'a=ice-ufrag:e2eU', 'a=ice-pwd:e2eTestIcePassword0123456', 'a=ice-options:trickle',
    `a=fingerprint:sha-256 ${fp}`, 'a=setup:actpass', `a=mid:${mid}`,
    'a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid', 'a=sendonly', 'a=rtcp-mux',
  ];
  return [
    'v=0', `o=- 4611731400430051336 ${version} IN IP4 127.0.0.1`, 's=-', 't=0 0',
    'a=group:BUNDLE 0 1', 'a=extmap-allow-mixed', 'a=msid-semantic: WMS e2e',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111', ...common(0),
    'a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level', 'a=msid:e2e e2e-audio',
    'a=rtpmap:111 opus/48000/2', 'a=rtcp-fb:111 transport-cc', 'a=fmtp:111 minptime=10;useinbandfec=1',
    'a=ssrc:1001 cname:e2e', 'a=ssrc:1001 msid:e2e e2e-audio',
    'm=video 9 UDP/TLS/RTP/SAVPF 96 97', ...common(1), 'a=rtcp-rsize', 'a=msid:e2e e2e-video',
    'a=rtpmap:96 VP8/90000', 'a=rtcp-fb:96 goog-remb', 'a=rtcp-fb:96 transport-cc', 'a=rtcp-fb:96 ccm fir',
    'a=rtcp-fb:96 nack', 'a=rtcp-fb:96 nack pli', 'a=rtpmap:97 rtx/90000', 'a=fmtp:97 apt=96',
    'a=ssrc-group:FID 2001 2002', 'a=ssrc:2001 cname:e2e', 'a=ssrc:2001 msid:e2e e2e-video',
    'a=ssrc:2002 cname:e2e', 'a=ssrc:2002 msid:e2e e2e-video',
    '',
  ].join('\r\n');
}
const HAND_TRACKS = [{ mid: '0', source: 'microphone' }, { mid: '1', source: 'camera' }];
// ---- harness: the same in every signaling-*.test.js, so that each file stands alone ----
// One `studyroom --dev` per file; its log is printed under any failing test.

// `setup(h)` runs once the server is up (a second root-level before() would run concurrently
// with the first one on Node 20).
function harness(setup = async () => {}) {
  const h = { server: null, sockets: [] };
  before(async () => {
    h.server = await startServer();
    await setup(h);
  });
  after(async () => {
    for (const s of h.sockets) s.close();
    await stopServer(h.server);
  });
  afterEach((t) => {
    // Clients live for one test, unless marked `keep` (a file-wide client).
    for (const s of h.sockets.filter((s) => !s.keep)) s.close();
    h.sockets = h.sockets.filter((s) => s.keep);
    if (!t.passed && h.server) {
      const exit = h.server.exited ? ` (exited: ${JSON.stringify(h.server.exited)})` : '';
      console.log(`---- studyroom log${exit} ----\n${h.server.log.join('').slice(-20_000)}\n---- end of log ----`);
    }
  });
  /** A Socket.IO client on /study that records every pushed event in `socket.inbox`. */
  h.client = (token, opts = {}) => {
    const socket = io(`${BASE}/study`, {
      auth: token === undefined ? {} : { token },
      transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000, ...opts,
    });
    socket.inbox = [];
    socket.onAny((ev, ...args) => socket.inbox.push({ ev, data: args[0] }));
    socket.on('disconnect', (reason) => { socket.disconnectReason = reason; });
    h.sockets.push(socket);
    return socket;
  };
  /** Connects with a fresh dev token and joins; returns { socket, ack, token }. */
  h.joined = async (query) => {
    const token = await devToken(query);
    const socket = h.client(token.token);
    await connected(socket);
    const ack = await request(socket, 'join', {});
    assert.ok(!ack?.error, `join failed: ${JSON.stringify(ack)}`);
    return { socket, ack, token };
  };
  h.assertAlive = () => assert.equal(h.server.exited, null, 'studyroom exited');
  return h;
}

async function startServer() {
  const bin = process.env.STUDYROOM_BIN;
  assert.ok(bin, 'set STUDYROOM_BIN to the path of the studyroom binary');
  assert.ok(!(await healthy()), 'something already answers on 127.0.0.1:5002 (a leftover server?)');
  const proc = spawn(bin, ['--dev'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env },
  });
  const s = { proc, log: [], exited: null };
  proc.stdout.on('data', (d) => s.log.push(d.toString()));
  proc.stderr.on('data', (d) => s.log.push(d.toString()));
  proc.on('exit', (code, signal) => { s.exited = { code, signal }; });
  proc.on('error', (e) => { s.exited = { error: e.message }; });
  process.on('exit', () => proc.kill('SIGKILL'));
  const deadline = Date.now() + 20_000;
  while (!(await healthy())) {
    if (s.exited) throw new Error(`studyroom exited at startup ${JSON.stringify(s.exited)}:\n${s.log.join('')}`);
    if (Date.now() > deadline) throw new Error(`studyroom not healthy after 20 s:\n${s.log.join('')}`);
    await delay(100);
  }
  return s;
}

async function stopServer(s) {
  if (!s || s.exited) return;
  s.proc.kill('SIGTERM');
  const deadline = Date.now() + 5000;
  while (!s.exited && Date.now() < deadline) await delay(50);
  if (!s.exited) s.proc.kill('SIGKILL');
}

async function healthy() {
  try {
    const r = await fetch(`${BASE}/healthz`, { signal: AbortSignal.timeout(1000) });
    return r.status === 200;
  } catch {
    return false;
  }
}

/** GET /dev/token; returns { token, room, identity }. */
async function devToken(query) {
  const r = await fetch(`${BASE}/dev/token?${new URLSearchParams(query)}`);
  const text = await r.text();
  assert.equal(r.status, 200, `GET /dev/token?${new URLSearchParams(query)} -> ${r.status} ${text}`);
  const body = JSON.parse(text);
  assert.equal(typeof body.token, 'string', `no token in ${text}`);
  return body;
}

/** Resolves once connected; rejects with the connect_error (message = error code). */
function connected(socket) {
  return new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
}

/** Emits with an acknowledgement; fails clearly when none comes within 5 s. */
async function request(socket, event, ...args) {
  try {
    return await socket.timeout(5000).emitWithAck(event, ...args);
  } catch (e) {
    throw new Error(`no ack for '${event}' within 5 s (${e.message}; connected=${socket.connected}, ` +
      `disconnect reason=${socket.disconnectReason})`);
  }
}

function assertError(ack, code, what) {
  assert.ok(ack && typeof ack.error === 'object', `${what}: expected error ${code}, got ${JSON.stringify(ack)}`);
  assert.equal(ack.error.code, code, `${what}: wrong error code in ${JSON.stringify(ack)}`);
  assert.ok(typeof ack.error.message === 'string' && ack.error.message.length > 0,
    `${what}: error without a message: ${JSON.stringify(ack)}`);
}

/** Polls `fn` until it returns something truthy; fails after `ms` naming `what`. */
async function until(fn, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(20);
  }
}

/** Pushed events of one name received so far by a harness client. */
function received(socket, event) {
  return socket.inbox.filter((e) => e.ev === event).map((e) => e.data);
}
