// The protocol contract (issue 17): what a client written from docs/protocol.md alone relies
// on, checked against a real `studyroom --dev` with socket.io-client, raw Engine.IO and SDP
// read as text (no WebRTC stack). One test per point; where the document states a value
// (dev token parameters, keepalive numbers), the test reads it from docs/protocol.md, so
// the document and the server cannot drift apart unnoticed.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { io } from 'socket.io-client';
import { startServer } from './lib/server.js';
import { launchBrowser } from './lib/browser.js';
import { handOffer, HAND_TRACKS } from './lib/hand-sdp.js';
import { assertError, connected, until } from './lib/signaling-harness.js';
import { devToken as devTokenAt, request } from './lib/sio-client.js';

const DOC = new URL('../../docs/protocol.md', import.meta.url);
let server;
let doc;
let sockets = [];

before(async () => {
  doc = await readFile(DOC, 'utf8');
  server = await startServer();
});
after(async () => {
  for (const s of sockets) s.close();
  if (server) await server.stop();
});
afterEach((t) => {
  for (const s of sockets) s.close();
  sockets = [];
  if (!t.passed && server) {
    console.log(`---- studyroom log ----\n${server.logs().split('\n').slice(-150).join('\n')}\n---- end ----`);
  }
});

// ---- 1. GET /dev/token: every parameter documented, each does what the document says ----

/** The parameter names of the `/dev/token` table in docs/protocol.md. */
function documentedTokenParams() {
  const section = doc.split('### Dev tokens')[1];
  assert.ok(section, 'docs/protocol.md has no "Dev tokens" section');
  const lines = section.split('\n');
  const start = lines.findIndex((l) => l.startsWith('| parameter'));
  assert.ok(start >= 0, 'no parameter table under "Dev tokens"');
  const end = lines.findIndex((l, i) => i > start && !l.startsWith('|'));
  return lines.slice(start + 2, end).map((row) => row.match(/^\| `([a-z_]+)`/)?.[1]).filter(Boolean);
}

test('1. GET /dev/token: the documented parameters are the accepted ones, with their effects', async () => {
  // Every parameter the server reads (signaling/src/http.rs TokenQuery) is in the document.
  const exercised = ['room', 'name', 'role', 'identity', 'publish', 'subscribe', 'chat', 'ttl', 'loss'];
  assert.deepEqual([...documentedTokenParams()].sort(), [...exercised].sort(),
    'the /dev/token table in docs/protocol.md does not list exactly the parameters the server accepts');
  assert.match(doc, /`loss`[^\n]*needs `--allow-impairment`/, 'the document says loss needs --allow-impairment');

  // Defaults: room lobby, name guest, role learner, generated identity, 6 h.
  const plain = await devToken({});
  assert.equal(plain.room, 'lobby');
  assert.match(plain.identity, /^guest-[0-9a-f]{8}$/);
  const pc = claims(plain.token);
  assert.equal(pc.name, 'guest');
  assert.equal(pc.role, 'learner');
  assert.ok(Math.abs(pc.exp - (Date.now() / 1000 + 21600)) < 60, `default ttl: exp ${pc.exp}`);
  assert.equal(pc.publish, undefined);
  assert.equal(pc.subscribe, undefined);
  assert.equal(pc.impair_loss, undefined);

  // identity, name, role reach the join ack.
  const room = 'contract-token';
  const proctor = await devToken({ room, name: 'Pat', role: 'proctor', identity: 'pat-1' });
  assert.equal(proctor.identity, 'pat-1');
  const p = await joined(proctor.token);
  assert.deepEqual([p.ack.participant.identity, p.ack.participant.name, p.ack.participant.role], ['pat-1', 'Pat', 'proctor']);

  // publish=0: the publish grant is off; subscribe=no: no subscriber transport.
  const noPub = await joined((await devToken({ room, name: 'Np', publish: '0' })).token);
  assertError(await request(noPub.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS }), 'forbidden', 'publish=0');
  const noSub = await joined((await devToken({ room, name: 'Ns', subscribe: 'no' })).token);
  assertError(await request(noSub.socket, 'restartIce', {}), 'forbidden', 'subscribe=no');
  assert.equal(claims((await devToken({ publish: 'yes' })).token).publish, true);
  // chat=0: the chat grant is off (chat.test.js covers what that does).
  assert.equal(claims((await devToken({ chat: '0' })).token).chat, false);
  assert.equal(pc.chat, undefined);

  // ttl: seconds until exp; negative gives an expired token.
  assert.ok(Math.abs(claims((await devToken({ ttl: '60' })).token).exp - (Date.now() / 1000 + 60)) < 5);
  const expired = client((await devToken({ ttl: '-10' })).token);
  await assert.rejects(connected(expired), (e) => e.message === 'token_expired');

  // loss: percent, carried as impair_loss (fraction, at most 0.9).
  assert.equal(claims((await devToken({ loss: '25' })).token).impair_loss, 0.25);
  assert.equal(claims((await devToken({ loss: '300' })).token).impair_loss, 0.9);

  // Refusals.
  for (const [q, what] of [[{ room: 'no spaces' }, 'room'], [{ role: 'admin' }, 'role']]) {
    const r = await fetch(`${server.baseUrl}/dev/token?${new URLSearchParams(q)}`);
    assert.equal(r.status, 400, `${what}: ${r.status}`);
    assert.equal((await r.json()).error.code, 'bad_request');
  }
});

// ---- 2. Keepalive: the documented pingInterval / pingTimeout, and a silent client dropped ----

test('2. keepalive: the open packet carries the documented numbers; a client that never pongs is dropped', async () => {
  const interval = Number(doc.match(/`pingInterval` \*\*(\d+)\*\* ms/)?.[1]);
  const timeout = Number(doc.match(/`pingTimeout` \*\*(\d+)\*\* ms/)?.[1]);
  assert.ok(interval > 0 && timeout > 0, 'docs/protocol.md states pingInterval and pingTimeout (Keepalive)');

  // Raw Engine.IO over HTTP long-polling, as a hand-written client would start.
  const silent = await eioOpen();
  assert.equal(silent.open.pingInterval, interval, `pingInterval: ${JSON.stringify(silent.open)}`);
  assert.equal(silent.open.pingTimeout, timeout, `pingTimeout: ${JSON.stringify(silent.open)}`);
  const polite = await eioOpen();
  const openedAt = Date.now();
  // The polite client answers every ping; the silent one never polls (so never pongs).
  let pings = 0;
  let politeAlive = true;
  const stop = new AbortController();
  const politeLoop = (async () => {
    while (!stop.signal.aborted) {
      const r = await fetch(polite.url, { signal: stop.signal }).catch(() => null);
      if (!r) return; // stopped while waiting for the next ping
      if (r.status !== 200) { politeAlive = false; return; }
      const packets = (await r.text()).split('\x1e');
      if (packets.includes('1')) { politeAlive = false; return; }
      for (const pkt of packets.filter((x) => x === '2')) {
        pings += 1;
        await fetch(polite.url, { method: 'POST', body: '3' });
      }
    }
  })();
  // The first ping goes out at once; unanswered, the socket is closed `pingTimeout` later.
  // Whatever the phase, a silent client is gone by interval + timeout.
  await delay(interval + timeout + 1000);
  const r = await fetch(silent.url);
  const body = await r.text();
  assert.ok(r.status === 400 || body.split('\x1e').includes('1'),
    `a client that never answered a ping is still connected after ${interval + timeout + 1000} ms: ${r.status} ${body}`);
  assert.ok(Date.now() - openedAt >= interval + timeout);
  stop.abort();
  await politeLoop;
  assert.ok(politeAlive && pings >= 1, `a client answering pings must stay connected (pings ${pings}, alive ${politeAlive})`);
});

/** Opens an Engine.IO v4 session over polling; returns {open, url} (url carries the sid). */
async function eioOpen() {
  const r = await fetch(`${server.baseUrl}/socket.io/?EIO=4&transport=polling`);
  const text = await r.text();
  assert.equal(r.status, 200, text);
  assert.ok(text.startsWith('0{'), `not an Engine.IO open packet: ${text}`);
  const open = JSON.parse(text.slice(1));
  return { open, url: `${server.baseUrl}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(open.sid)}` };
}

// ---- 3. Track.codec: one form (the MIME subtype in lower case) in every place it appears ----

test('3. Track.codec is the lower-case MIME subtype in the publish ack, trackPublished and join acks', async () => {
  const room = 'contract-codec';
  const watcher = await joined((await devToken({ room, name: 'Watcher' })).token);
  for (const video of ['VP8', 'H264']) {
    const pub = await joined((await devToken({ room, name: `Pub${video}` })).token);
    const ack = await request(pub.socket, 'publish', { sdp: handOffer({ video }), tracks: HAND_TRACKS });
    assert.ok(!ack.error, `publish: ${JSON.stringify(ack)}`);
    const byKind = Object.fromEntries(ack.tracks.map((t) => [t.kind, t.codec]));
    assert.deepEqual(byKind, { audio: 'opus', video: video.toLowerCase() }, `publish ack tracks ${JSON.stringify(ack.tracks)}`);
    // The same string as the answer's rtpmap encoding name, lower-cased (whatever its case).
    for (const t of ack.tracks) {
      const mid = HAND_TRACKS.find((x) => x.source === t.source).mid;
      const m = mline(ack.sdp, mid);
      const first = m[0].split(' ')[3];
      const name = m.find((l) => l.startsWith(`a=rtpmap:${first} `)).split(' ')[1].split('/')[0];
      assert.equal(t.codec, name.toLowerCase(), `mid ${mid}: ${m.join(' | ')}`);
    }
    for (const t of ack.tracks) {
      const seen = await until(() => received(watcher.socket, 'trackPublished').find((x) => x.id === t.id), `trackPublished ${t.id}`);
      assert.equal(seen.codec, t.codec, 'trackPublished carries the ack\'s codec');
    }
  }
  const late = await joined((await devToken({ room, name: 'Late' })).token);
  const codecs = late.ack.participants.flatMap((p) => p.tracks.map((t) => t.codec)).sort();
  assert.deepEqual(codecs, ['h264', 'opus', 'opus', 'vp8'], 'codecs in a later join ack');
});

// ---- 4. The publisher answer lists no feedback the offer did not (RFC 3264, RFC 8829) ----

test('4. the publish answer carries only rtcp-fb the offer listed, per m-line and codec', async () => {
  const room = 'contract-feedback';
  /** `a=rtcp-fb` of an m-section as "pt value" strings, whitespace-normalised. */
  const fb = (lines) => lines.filter((l) => l.startsWith('a=rtcp-fb:'))
    .map((l) => l.slice('a=rtcp-fb:'.length).split(/\s+/).join(' '));
  const cases = [
    ['only nack pli', ['nack pli'], ['96 nack pli']],
    ['no feedback at all', [], []],
    ['everything Chromium offers', ['goog-remb', 'transport-cc', 'ccm fir', 'nack', 'nack pli'], null],
  ];
  for (const [what, videoFb, want] of cases) {
    const pub = await joined((await devToken({ room, name: 'Pub' })).token);
    const offer = handOffer({ videoFb });
    const ack = await request(pub.socket, 'publish', { sdp: offer, tracks: HAND_TRACKS });
    assert.ok(!ack.error, `${what}: publish ${JSON.stringify(ack)}`);
    for (const mid of ['0', '1']) {
      const offered = fb(mline(offer, mid));
      const extra = fb(mline(ack.sdp, mid)).filter((x) => !offered.includes(x));
      assert.deepEqual(extra, [], `${what}: mid ${mid} answers feedback the offer did not list\n${ack.sdp}`);
    }
    // Not stripped beyond the intersection: what both sides support stays.
    if (want) assert.deepEqual(fb(mline(ack.sdp, '1')), want, `${what}: video feedback in the answer`);
    else for (const x of ['96 nack', '96 nack pli']) assert.ok(fb(mline(ack.sdp, '1')).includes(x), `${what}: ${x} kept`);
    pub.socket.close();
  }
});

// ---- 5. A subscriber m-line offers only its producer's codec (+ RTX), recycled m-lines too ----

test('5. each subscriber m-line offers only the codec its publisher sends, also when an m-line is reused', async () => {
  const room = 'contract-sub-codecs';
  const sub = await joined((await devToken({ room, name: 'Sub' })).token);
  let next = 0; // index of the next offer `sub` has not looked at
  /** Answers `sub`'s offers until one maps a mid of `pid`'s `kind`; returns [offer, mid]. */
  const offerFor = async (pid, kind) => {
    for (;;) {
      const offer = await until(() => received(sub.socket, 'offer')[next], `offer #${next + 1} (${pid} ${kind})`);
      next += 1;
      const t = offer.tracks.find((x) => x.participantId === pid && x.kind === kind && x.trackId);
      const ok = await request(sub.socket, 'answer', { sdp: answerFor(offer.sdp) });
      assert.deepEqual(ok, { ok: true }, 'answer');
      if (t) return [offer, t.mid];
    }
  };
  /** [rtpmap names] of the payload types of m-line `mid`, lower case. */
  const codecsOf = (sdp, mid) => {
    const m = mline(sdp, mid);
    return m[0].split(' ').slice(3).map((pt) =>
      (m.find((l) => l.startsWith(`a=rtpmap:${pt} `)) || '? ?').split(' ')[1].split('/')[0].toLowerCase());
  };
  const publish = async (name, video) => {
    const p = await joined((await devToken({ room, name })).token);
    const ack = await request(p.socket, 'publish', { sdp: handOffer({ video }), tracks: HAND_TRACKS });
    assert.ok(!ack.error, `publish ${name}: ${JSON.stringify(ack)}`);
    return { ...p, id: p.ack.participant.id };
  };

  const a = await publish('Avp8', 'VP8');
  const [offerA, videoA] = await offerFor(a.id, 'video');
  assert.deepEqual(codecsOf(offerA.sdp, videoA), ['vp8', 'rtx'], `A's video m-line:\n${mline(offerA.sdp, videoA).join('\n')}`);
  const audioA = offerA.tracks.find((x) => x.participantId === a.id && x.kind === 'audio').mid;
  // Audio m-lines offer RED beside Opus (docs/protocol.md, "Audio options"): the producer sends
  // Opus, and RED is how a subscriber may take it with redundancy.
  assert.deepEqual(codecsOf(offerA.sdp, audioA), ['red', 'opus']);

  // A leaves: its m-lines go inactive (answered, so free). B publishes H264.
  await request(a.socket, 'leave', {});
  await until(() => received(sub.socket, 'participantLeft').find((x) => x.id === a.id), 'A left');
  const b = await publish('Bh264', 'H264');
  const [offerB, videoB] = await offerFor(b.id, 'video');
  assert.deepEqual(codecsOf(offerB.sdp, videoB), ['h264', 'rtx'], `B's video m-line:\n${mline(offerB.sdp, videoB).join('\n')}`);
  assert.notEqual(videoB, videoA, 'an m-line answered for VP8 was reused for H264');
  assert.ok(mline(offerB.sdp, videoA).includes('a=inactive'), "A's video m-line stays inactive");

  // C publishes VP8: it takes A's free m-line over, which still offers VP8 alone.
  const c = await publish('Cvp8', 'VP8');
  const [offerC, videoC] = await offerFor(c.id, 'video');
  assert.equal(videoC, videoA, "C's VP8 video reuses A's m-line");
  assert.deepEqual(codecsOf(offerC.sdp, videoC), ['vp8', 'rtx']);
  // Every m-line of the last offer: one codec (+ its RTX for video).
  for (const t of offerC.tracks.filter((x) => x.trackId)) {
    assert.ok(codecsOf(offerC.sdp, t.mid).length <= 2, `mid ${t.mid}: ${codecsOf(offerC.sdp, t.mid)}`);
  }
});

// ---- 6. Versions: `protocol` in the join and resume acks; studyroom.js refuses another ----

test('6. the join and resume acks carry the documented protocol revision; studyroom.js refuses a server it does not speak', async () => {
  const current = Number(doc.match(/speaks: currently \*\*(\d+)\*\*/)?.[1]);
  assert.ok(current >= 1, 'docs/protocol.md states the current revision (Versions)');
  assert.match(doc, new RegExp(`^\\| ${current} \\| `, 'm'), `the changelog has an entry for revision ${current}`);
  const room = 'contract-version';
  const tok = await devToken({ room, name: 'Ver' });
  const first = await joined(tok.token);
  assert.equal(first.ack.protocol, current, `join ack: ${JSON.stringify(first.ack).slice(0, 200)}`);
  // Drop the socket without leave (the engine closed under it), resume on a new one.
  first.socket.io.engine.close();
  const again = client(tok.token);
  await connected(again);
  const resumed = await request(again, 'resume', { resumeToken: first.ack.resumeToken });
  assert.equal(resumed.resumed, true, `resume: ${JSON.stringify(resumed)}`);
  assert.equal(resumed.protocol, current, 'resume ack carries protocol');

  // The client library, as the demo page serves it, in a real browser.
  const watcher = await joined((await devToken({ room, name: 'Watcher' })).token);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(`${server.baseUrl}/healthz`);
    const outcome = await page.evaluate(async ({ room, current }) => {
      const { StudyRoom, PROTOCOL_VERSIONS } = await import('/studyroom.js');
      const token = async (name) => (await (await fetch(`/dev/token?room=${room}&name=${name}`)).json()).token;
      const result = { speaks: [...PROTOCOL_VERSIONS] };
      const ok = new StudyRoom({ url: location.origin });
      await ok.connect(await token('Current'));
      result.joined = (await ok.join()).protocol;
      await ok.leave();
      // A client written for another revision only.
      StudyRoom.protocols = [current + 1];
      const old = new StudyRoom({ url: location.origin });
      await old.connect(await token('Other'));
      try {
        await old.join();
        result.refused = null;
      } catch (e) {
        result.refused = { name: e.name, code: e.code, message: e.message, state: old.state, socket: old.socket };
      }
      return result;
    }, { room, current });
    assert.deepEqual(outcome.speaks, [current], 'studyroom.js speaks the current revision');
    assert.equal(outcome.joined, current);
    assert.ok(outcome.refused, 'a client speaking another revision joined anyway');
    assert.equal(outcome.refused.name, 'StudyRoomError');
    assert.equal(outcome.refused.code, 'protocol_mismatch', JSON.stringify(outcome.refused));
    assert.match(outcome.refused.message, new RegExp(`speaks protocol ${current}, this client speaks ${current + 1}`));
    assert.deepEqual([outcome.refused.state, outcome.refused.socket], ['disconnected', null]);
    // The refusing client left the room at once (it does not linger until a timeout).
    const other = await until(() => received(watcher.socket, 'participantJoined').find((p) => p.name === 'Other'), 'Other joined');
    const left = await until(() => received(watcher.socket, 'participantLeft').find((x) => x.id === other.id), 'Other left');
    assert.equal(left.reason, 'left');
  } finally {
    await browser.close();
  }
});

/** A receive-only answer to a server offer, as a browser's subscriber PC would make it. */
function answerFor(offer) {
  const bundle = offer.match(/^a=group:BUNDLE .*$/m);
  const out = ['v=0', 'o=- 7 2 IN IP4 127.0.0.1', 's=-', 't=0 0', ...(bundle ? [bundle[0]] : [])];
  const fp = Array.from({ length: 32 }, (_, i) => ((i * 53 + 7) & 0xff).toString(16).padStart(2, '0').toUpperCase()).join(':');
  for (const lines of offer.split(/\r?\n(?=m=)/).slice(1).map((m) => m.split(/\r?\n/).filter(Boolean))) {
    const dir = lines.find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l));
    out.push(lines[0], 'c=IN IP4 0.0.0.0', 'a=ice-ufrag:e2eS', 'a=ice-pwd:e2eSubscriberPassword01234',
      `a=fingerprint:sha-256 ${fp}`, 'a=setup:active', ...lines.filter((l) => l.startsWith('a=mid:')),
      ...lines.filter((l) => /^a=(rtpmap|fmtp|rtcp-fb|extmap):/.test(l)));
    out.push(dir === 'a=sendonly' || dir === 'a=sendrecv' ? 'a=recvonly' : 'a=inactive', 'a=rtcp-mux');
  }
  return out.join('\r\n') + '\r\n';
}

/** The lines of the m-section with `a=mid:<mid>` in `sdp`. */
function mline(sdp, mid) {
  const m = sdp.split(/\r?\n(?=m=)/).slice(1).map((x) => x.split(/\r?\n/).filter(Boolean))
    .find((lines) => lines.includes(`a=mid:${mid}`));
  assert.ok(m, `no m-line with mid ${mid} in\n${sdp}`);
  return m;
}

// ---- helpers ----

/**
 * A hand-written publisher offer shaped like Chromium's: mid 0 = opus audio, mid 1 = video
 * with RTX (VP8 unless `video` names H264), both sendonly, BUNDLEd, DTLS actpass.
 * `videoFb` replaces the video codec's rtcp-fb values. No media ever flows from it.
 */
/** GET /dev/token?query -> { token, room, identity }. */
function devToken(query) {
  return devTokenAt(server.baseUrl, query);
}

/** The JWT's claims (payload only; the signature is the server's business). */
function claims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** A socket.io-client on /study recording every push in `socket.inbox`. */
function client(token) {
  const socket = io(`${server.baseUrl}/study`, {
    auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true, timeout: 5000,
  });
  socket.inbox = [];
  socket.onAny((event, data) => socket.inbox.push({ event, data }));
  sockets.push(socket);
  return socket;
}

/** Connects with `token` and joins; returns { socket, ack }. */
async function joined(token) {
  const socket = client(token);
  await connected(socket);
  const ack = await request(socket, 'join', {});
  assert.ok(ack && !ack.error, `join refused: ${JSON.stringify(ack)}`);
  return { socket, ack };
}

/** Pushes of one event received so far. */
function received(socket, event) {
  return socket.inbox.filter((e) => e.event === event).map((e) => e.data);
}
