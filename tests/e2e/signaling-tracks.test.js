// Publishing over signaling without a browser, against a real `studyroom --dev`
// (docs/protocol.md): a hand-written offer gets an ICE-lite answer and Track objects, the
// room hears trackPublished / trackMuted / trackUnpublished, subscribers get `offer` events
// mapping mids to tracks, and the next offer waits for the answer to the previous one.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { io } from 'socket.io-client';

const BASE = 'http://127.0.0.1:5002';
const h = harness();

function assertTrack(t, want) {
  assert.equal(typeof t?.id, 'string', `track without id: ${JSON.stringify(t)}`);
  assert.ok(['audio', 'video'].includes(t.kind) && typeof t.codec === 'string' && t.codec.length > 0,
    `track kind/codec: ${JSON.stringify(t)}`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(t[k], v, `track.${k} in ${JSON.stringify(t)}`);
}

/** m-sections of an SDP as arrays of lines (the session part is dropped). */
const sections = (sdp) => sdp.split(/\r?\n(?=m=)/).slice(1).map((m) => m.split(/\r?\n/).filter(Boolean));

/** A receive-only answer to a server offer, as a browser's subscriber PC would make it. */
function answerFor(offer) {
  const bundle = offer.match(/^a=group:BUNDLE .*$/m);
  const out = ['v=0', 'o=- 7 2 IN IP4 127.0.0.1', 's=-', 't=0 0', ...(bundle ? [bundle[0]] : [])];
  const fp = Array.from({ length: 32 }, (_, i) => ((i * 53 + 7) & 0xff).toString(16).padStart(2, '0').toUpperCase()).join(':');
  for (const lines of sections(offer)) {
    const dir = lines.find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l));
    out.push(lines[0], 'c=IN IP4 0.0.0.0', 'a=ice-ufrag:e2eS', 'a=ice-pwd:e2eSubscriberPassword01234',
      `a=fingerprint:sha-256 ${fp}`, 'a=setup:active', ...lines.filter((l) => l.startsWith('a=mid:')),
      ...lines.filter((l) => /^a=(rtpmap|fmtp|rtcp-fb|extmap|sctp-port|max-message-size):|^a=rtcp-rsize$/.test(l)));
    if (!lines[0].startsWith('m=application')) {
      out.push(dir === 'a=sendonly' || dir === 'a=sendrecv' ? 'a=recvonly' : 'a=inactive', 'a=rtcp-mux');
    }
  }
  return out.join('\r\n') + '\r\n';
}

/**
 * Answers a subscriber's offers in order, as a browser would, until one satisfies `pred`;
 * returns that one (unanswered) and its index. The server offers one change at a time.
 */
async function answerOffersUntil(socket, pred, what, from = 0) {
  for (let i = from; ; i++) {
    const offer = await until(() => received(socket, 'offer')[i], `offer #${i + 1} (${what})`);
    if (pred(offer)) return { offer, index: i };
    assert.deepEqual(await request(socket, 'answer', { sdp: answerFor(offer.sdp) }), { ok: true }, `answer to offer #${i + 1}`);
  }
}
const maps = (offer, trackId) => offer.tracks.some((x) => x.trackId === trackId);

test('publish: an ICE-lite answer, Track objects, trackPublished and an offer to the others', async () => {
  const room = 'publish-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const idA = a.ack.participant.id;

  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  assert.match(pub.sdp, /^v=0\r?\n/);
  assert.match(pub.sdp, /^a=ice-lite/m, 'the answer is not ICE-lite');
  assert.match(pub.sdp, /^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 40\d\d\d typ host/im, 'no UDP host candidate on 127.0.0.1:40000-40100');
  assert.match(pub.sdp, /^a=setup:(active|passive)$/m);
  const answered = sections(pub.sdp);
  assert.deepEqual(answered.map((m) => m.find((l) => l.startsWith('a=mid:'))), ['a=mid:0', 'a=mid:1']);
  for (const m of answered) assert.ok(m.includes('a=recvonly'), `answer m-line is not recvonly: ${m.join(' | ')}`);
  assert.equal(pub.tracks.length, 2, JSON.stringify(pub.tracks));
  const audio = pub.tracks.find((t) => t.kind === 'audio');
  const video = pub.tracks.find((t) => t.kind === 'video');
  assertTrack(audio, { participantId: idA, source: 'microphone', muted: false });
  assertTrack(video, { participantId: idA, source: 'camera', muted: false });
  assert.equal(audio.codec, 'opus');
  assert.equal(video.codec, 'vp8');

  for (const t of pub.tracks) {
    const seen = await until(() => received(b.socket, 'trackPublished').find((x) => x.id === t.id), `trackPublished(${t.kind}) at B`);
    assert.deepEqual(seen, t);
  }
  const { offer } = await answerOffersUntil(b.socket, (o) => pub.tracks.every((t) => maps(o, t.id)), 'both tracks at B');
  assert.match(offer.sdp, /^a=ice-lite/m);
  for (const t of pub.tracks) {
    const m = offer.tracks.find((x) => x.trackId === t.id);
    assert.ok(m, `offer maps no mid to ${t.id}: ${JSON.stringify(offer.tracks)}`);
    assert.deepEqual({ participantId: m.participantId, kind: m.kind, source: m.source },
      { participantId: idA, kind: t.kind, source: t.source });
    const section = sections(offer.sdp).find((s) => s.includes(`a=mid:${m.mid}`));
    assert.ok(section?.[0].startsWith(`m=${t.kind} `), `mid ${m.mid} is not an ${t.kind} m-line in the offer`);
  }
  assert.ok(!received(a.socket, 'offer').some((o) => o.tracks?.some((x) => x.participantId === idA)),
    'A was offered its own tracks');

  const c = await h.joined({ room, name: 'Cy', role: 'learner' });
  const listed = c.ack.participants.find((p) => p.id === idA);
  assert.deepEqual(listed?.tracks?.map((t) => t.id).sort(), pub.tracks.map((t) => t.id).sort(), 'late joiner sees A without its tracks');
});

test('mute, trickle, unpublish; a new offer waits for the answer to the previous one', async () => {
  const room = 'mute-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const idA = a.ack.participant.id;
  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  const audio = pub.tracks.find((t) => t.kind === 'audio');
  const video = pub.tracks.find((t) => t.kind === 'video');
  // Bring B's subscriber PC up to date: both tracks offered and answered.
  const both = await answerOffersUntil(b.socket, (o) => maps(o, audio.id) && maps(o, video.id), 'both tracks at B');
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(both.offer.sdp) }), { ok: true });

  for (const muted of [true, false]) {
    assert.deepEqual(await request(a.socket, 'mute', { trackId: audio.id, muted }), { ok: true });
    await until(() => received(b.socket, 'trackMuted').find((x) => x.id === audio.id && x.muted === muted), `trackMuted(${muted}) at B`);
  }
  assert.deepEqual(received(b.socket, 'trackMuted').map((x) => x.participantId), [idA, idA]);

  const candidate = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  assert.deepEqual(await request(a.socket, 'ice', { target: 'publisher', candidate }), { ok: true });
  assert.deepEqual(await request(a.socket, 'ice', { target: 'publisher', candidate: null }), { ok: true });

  assert.deepEqual(await request(a.socket, 'unpublish', { trackId: video.id }), { ok: true });
  const gone = await until(() => received(b.socket, 'trackUnpublished').find((x) => x.id === video.id), 'trackUnpublished at B');
  assert.deepEqual(gone, { id: video.id, participantId: idA });
  assertError(await request(a.socket, 'mute', { trackId: video.id, muted: true }), 'unknown_track', 'mute of an unpublished track');

  // C publishes: B gets an offer for C's tracks and leaves it unanswered for now.
  const c = await h.joined({ room, name: 'Cy', role: 'learner' });
  const pubC = await request(c.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pubC.error, `publish by C failed: ${JSON.stringify(pubC)}`);
  const forC = await answerOffersUntil(b.socket, (o) => o.tracks.some((x) => x.participantId === c.ack.participant.id), "C's tracks at B", both.index + 1);
  // D publishes while that offer is pending: B hears trackPublished, but no offer until it answers.
  const d = await h.joined({ room, name: 'Di', role: 'learner' });
  const pubD = await request(d.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pubD.error, `publish by D failed: ${JSON.stringify(pubD)}`);
  for (const t of pubD.tracks) await until(() => received(b.socket, 'trackPublished').find((x) => x.id === t.id), 'trackPublished(D) at B');
  assert.equal(received(b.socket, 'offer').length, forC.index + 1, 'a new offer came before the previous one was answered');
  assertError(await request(b.socket, 'answer', { sdp: 'this is no answer' }), 'bad_sdp', 'garbage answer to a pending offer');
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(forC.offer.sdp) }), { ok: true });
  const forD = await until(() => received(b.socket, 'offer')[forC.index + 1], 'the next offer once B answered');
  assert.ok(pubD.tracks.every((t) => maps(forD, t.id)), `offer after the answer misses D's tracks: ${JSON.stringify(forD.tracks)}`);
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(forD.sdp) }), { ok: true });
  assertError(await request(b.socket, 'answer', { sdp: answerFor(forD.sdp) }), 'no_offer_pending', 'answering twice');
});

test('a track published again after an unpublish reuses the subscriber\'s m-line (no renegotiation)', async () => {
  const room = 'republish-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  const video = pub.tracks.find((t) => t.kind === 'video');
  const both = await answerOffersUntil(b.socket, (o) => pub.tracks.every((t) => maps(o, t.id)), 'both tracks at B');
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(both.offer.sdp) }), { ok: true });
  const slot = both.offer.tracks.find((t) => t.trackId === video.id);
  assert.equal(slot.participantId, a.ack.participant.id);
  assert.equal(slot.source, 'camera');

  assert.deepEqual(await request(a.socket, 'unpublish', { trackId: video.id }), { ok: true });
  await until(() => received(b.socket, 'trackUnpublished').find((x) => x.id === video.id), 'trackUnpublished at B');
  const offersBefore = received(b.socket, 'offer').length;
  const again = await request(a.socket, 'publish', { sdp: handOffer(3), tracks: HAND_TRACKS });
  assert.ok(!again.error, `re-publish failed: ${JSON.stringify(again)}`);
  const video2 = again.tracks.find((t) => t.kind === 'video');
  assert.ok(video2 && video2.id !== video.id, `re-published video: ${JSON.stringify(again.tracks)}`);
  // B learns the new track id with the same (participantId, source): the m-line it already
  // has for Ada's camera carries it, continuously (docs/protocol.md, "offer").
  const tp = await until(() => received(b.socket, 'trackPublished').find((x) => x.id === video2.id), 'trackPublished(new video) at B');
  assert.equal(tp.participantId, slot.participantId);
  assert.equal(tp.source, slot.source);
  // A round trip on B's socket, then: no new offer was needed.
  assert.ok(!(await request(b.socket, 'mute', { trackId: 'TR999999', muted: true })).ok);
  assert.equal(received(b.socket, 'offer').length, offersBefore, 'no renegotiation for a re-publish of the same source');
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
