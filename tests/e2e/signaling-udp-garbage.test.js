// Garbage on the media ports of a real `studyroom --dev`: random bytes, truncated and forged
// STUN (including a binding request naming a live session's ufrag with a wrong
// MESSAGE-INTEGRITY), plaintext "RTP"/RTCP using a publisher's SSRCs, DTLS-looking records,
// TURN channel data and oversized datagrams. The server must drop it all and keep serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { handOffer, HAND_TRACKS } from './lib/hand-sdp.js';
import { attr as stunAttr } from './lib/turn-client.js';
import { BASE, harness, received, request, until } from './lib/signaling-harness.js';

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
