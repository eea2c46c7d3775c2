// Garbage on the media ports of a real `studyroom --dev`: random bytes, truncated and forged
// STUN (including a binding request naming a live session's ufrag with a wrong
// MESSAGE-INTEGRITY), plaintext "RTP"/RTCP using a publisher's SSRCs, DTLS-looking records,
// TURN channel data and oversized datagrams. The server must drop it all and keep serving.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { setTimeout as delay } from 'node:timers/promises';
import { io } from 'socket.io-client';

const BASE = 'http://127.0.0.1:5002';
const h = harness();

function crc32(buf) {
  let crc = ~0;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
function stunAttr(type, value) {
  const b = Buffer.alloc(4 + value.length + ((4 - (value.length % 4)) % 4));
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(value.length, 2);
  value.copy(b, 4);
  return b;
}
/** A STUN message; with `fingerprint` its FINGERPRINT is correct, so only the rest is wrong. */
function stun(type, attrs, { fingerprint = true } = {}) {
  const head = Buffer.alloc(20);
  head.writeUInt16BE(type, 0);
  head.writeUInt32BE(0x2112a442, 4);
  randomBytes(12).copy(head, 8);
  const body = Buffer.concat(attrs.map(([t, v]) => stunAttr(t, v)));
  if (!fingerprint) { head.writeUInt16BE(body.length, 2); return Buffer.concat([head, body]); }
  head.writeUInt16BE(body.length + 8, 2);
  const crc = crc32(Buffer.concat([head, body])) ^ 0x5354554e;
  return Buffer.concat([head, body, stunAttr(0x8028, u32(crc))]);
}
function rtp(pt, ssrc, seq, payloadLen) {
  const b = Buffer.concat([Buffer.alloc(12), randomBytes(payloadLen)]);
  b[0] = 0x80; b[1] = pt; b.writeUInt16BE(seq & 0xffff, 2); b.writeUInt32BE(seq * 960, 4); b.writeUInt32BE(ssrc, 8);
  return b;
}

/** Every kind of junk we can think of, aimed at a session whose server ufrag is `ufrag`. */
function junk(ufrag) {
  const out = [];
  for (let i = 0; i < 60; i++) out.push(randomBytes(Math.floor(Math.random() * 1500)));
  out.push(Buffer.alloc(0), Buffer.from([0]), Buffer.from([0x00, 0x01]), randomBytes(19));
  const binding = stun(0x0001, [[0x0006, Buffer.from(`${ufrag}:e2eU`)], [0x0024, u32(0x6e7f00ff)],
    [0x802a, randomBytes(8)], [0x0025, Buffer.alloc(0)], [0x0008, randomBytes(20)]]);
  out.push(binding, binding.subarray(0, 20), binding.subarray(0, 27), binding.subarray(0, binding.length - 3));
  const lying = Buffer.from(binding); lying.writeUInt16BE(0xfff0, 2); out.push(lying); // length past the end
  out.push(stun(0x0001, [[0x0006, Buffer.from('nobody:e2eU')], [0x0008, randomBytes(20)]]));
  out.push(stun(0x0001, [[0x0006, Buffer.from(`${ufrag}:e2eU`)]], { fingerprint: false })); // no integrity at all
  out.push(stun(0x0101, [[0x0020, randomBytes(8)]]), stun(0x0111, [[0x0009, randomBytes(12)]])); // unsolicited responses
  out.push(stun(0x0003, [[0x0019, Buffer.from([17, 0, 0, 0])]])); // a TURN Allocate
  out.push(stun(0x0001, [[0x0006, randomBytes(600)]])); // USERNAME over 513 bytes
  for (let seq = 0; seq < 40; seq++) out.push(rtp(111, 1001, seq, 80), rtp(96, 2001, seq, 900), rtp(97, 2002, seq, 20));
  out.push(rtp(96, 2001, 1, 0).subarray(0, 7), Buffer.from([0x90, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0x07, 0xd1, 0xbe, 0xde, 0x00, 0x09])); // truncated, bad extension
  out.push(Buffer.concat([Buffer.from([0x80, 0xc8, 0x00, 0x06]), u32(1001), randomBytes(20)])); // SR, plaintext
  out.push(Buffer.from([0x81, 0xcd, 0x00, 0x02, 0, 0, 0, 1]), Buffer.from([0x80, 0xc9, 0xff, 0xff])); // truncated PLI / RR
  out.push(Buffer.concat([Buffer.from([0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x01]), randomBytes(256)]));
  out.push(Buffer.concat([Buffer.from([0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0x00, 0x40]), randomBytes(64)]));
  out.push(Buffer.from([0x16, 0xfe, 0xff, 0xff, 0xff]), Buffer.from([0x40, 0x01, 0xff, 0xff, 1, 2, 3]));
  out.push(randomBytes(9000), randomBytes(65000));
  return out;
}

async function sendAll(ports, datagrams) {
  const sock = dgram.createSocket('udp4');
  sock.on('error', () => {}); // ICMP port unreachable for ports nobody listens on is fine
  sock.on('message', () => {});
  await new Promise((resolve) => sock.bind(0, '127.0.0.1', resolve));
  let sent = 0;
  for (let round = 0; round < 3; round++) {
    for (const port of ports) {
      for (const d of datagrams) {
        await new Promise((resolve, reject) => sock.send(d, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
        sent++;
      }
    }
  }
  sock.close();
  return sent;
}

test('garbage datagrams on the media ports: the server stays up and keeps serving', async () => {
  const room = 'udp-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  const ufrag = pub.sdp.match(/^a=ice-ufrag:(\S+)/m)?.[1];
  assert.ok(ufrag, 'answer without a=ice-ufrag');
  const candidatePorts = [...pub.sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host/gim)].map((m) => Number(m[1]));
  assert.ok(candidatePorts.length > 0, 'answer without a host candidate on 127.0.0.1');
  const ports = [...new Set([40000, 40001, 40002, 40003, ...candidatePorts])];

  const sent = await sendAll(ports, junk(ufrag));
  assert.ok(sent > 1000);

  const r = await fetch(`${BASE}/healthz`);
  assert.equal(r.status, 200);
  assert.equal((await r.text()).trim(), 'ok');
  h.assertAlive();
  assert.ok(a.socket.connected && b.socket.connected, 'a signaling client was dropped');
  // Signaling and the session state still work: a newcomer joins, A can still mute its track.
  const c = await h.joined({ room, name: 'Cy', role: 'learner' });
  const idC = c.ack.participant.id;
  await until(() => received(a.socket, 'participantJoined').find((p) => p.id === idC), 'participantJoined(C) at A');
  const audio = pub.tracks.find((t) => t.kind === 'audio');
  assert.deepEqual(await request(a.socket, 'mute', { trackId: audio.id, muted: true }), { ok: true });
  await until(() => received(c.socket, 'trackMuted').find((x) => x.id === audio.id), 'trackMuted at C');
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
