// What the browser's own getStats() says about the media transport to the SFU, in a room of
// two publishing participants (so each page has a publisher and a subscriber PC):
// - DTLS-SRTP negotiated an AEAD AES-GCM SRTP profile, on every PC;
// - the selected ICE pair is host <-> host, to the SFU's 127.0.0.1 on a media port 40000-40100;
// - RTCP works both ways: the SFU sends receiver reports for what it receives (the publisher
//   sees remote-inbound-rtp with loss and RTT, more RTT measurements over time) and sender
//   reports for what it forwards (the subscriber sees remote-outbound-rtp, more over time).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom, pcStats } from './lib/stats.js';

const ROOM = 'e2e-transport';
const AES_GCM_SRTP = /^(SRTP_)?AEAD_AES_(128|256)_GCM$/; // Chromium names the DTLS-SRTP profile
const MEDIA_PORTS = [40000, 40100];
const RTCP_TIMEOUT_MS = 10000;

const byId = (stats) => new Map(stats.map((s) => [s.id, s]));

/** Checks one PC's DTLS transport and selected candidate pair; returns a summary. */
function checkTransport(label, stats) {
  const ids = byId(stats);
  const transports = stats.filter((s) => s.type === 'transport');
  assert.equal(transports.length, 1, `${label}: one (bundled, rtcp-muxed) transport`);
  const tr = transports[0];
  assert.equal(tr.dtlsState, 'connected', `${label}: DTLS connected`);
  assert.match(tr.srtpCipher || '', AES_GCM_SRTP, `${label}: SRTP profile is AEAD AES-GCM (got ${tr.srtpCipher})`);

  const pair = ids.get(tr.selectedCandidatePairId);
  assert.ok(pair, `${label}: a selected candidate pair (${tr.selectedCandidatePairId})`);
  assert.equal(pair.state, 'succeeded', `${label}: selected pair succeeded`);
  const local = ids.get(pair.localCandidateId);
  const remote = ids.get(pair.remoteCandidateId);
  const where = `${label}: ${JSON.stringify({ local, remote })}`;
  assert.equal(remote?.candidateType, 'host', `remote candidate is host; ${where}`);
  assert.equal(remote.protocol, 'udp', `remote candidate is UDP; ${where}`);
  assert.equal(remote.address, '127.0.0.1', `remote candidate is 127.0.0.1; ${where}`);
  assert.ok(remote.port >= MEDIA_PORTS[0] && remote.port <= MEDIA_PORTS[1], `remote port in ${MEDIA_PORTS.join('-')}; ${where}`);
  assert.equal(local?.candidateType, 'host', `local candidate is host; ${where}`);
  assert.equal(local.address, '127.0.0.1', `local candidate is 127.0.0.1; ${where}`);
  return { srtpCipher: tr.srtpCipher, dtlsCipher: tr.dtlsCipher, tlsVersion: tr.tlsVersion, sfu: `${remote.address}:${remote.port}` };
}

/** The SFU's receiver report on `p`'s outbound camera: its remote-inbound-rtp. */
async function receiverReport(p) {
  const pub = (await pcStats(p.page)).find((pc) => pc.role === 'publisher');
  const out = pub?.stats.find((s) => s.type === 'outbound-rtp' && s.kind === 'video');
  const rr = out && pub.stats.find((s) => s.type === 'remote-inbound-rtp' && s.localId === out.id);
  return { out, rr };
}

/** The SFU's sender report on the camera `p` receives from `fromId`: its remote-outbound-rtp. */
async function senderReport(p, fromId) {
  const byMid = await p.page.evaluate(() => Object.fromEntries(window.studyroom.remoteByMid));
  const sub = (await pcStats(p.page)).find((pc) => pc.role === 'subscriber');
  const inb = sub?.stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video'
    && byMid[s.mid]?.participantId === fromId && byMid[s.mid]?.source === 'camera');
  const sr = inb && sub.stats.find((s) => s.type === 'remote-outbound-rtp' && s.localId === inb.id);
  return { inb, sr };
}

test('AES-GCM SRTP, host pairs on the media ports, and RTCP reports from the SFU', { timeout: 60000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Alpha' });
    const b = await h.join({ room: ROOM, name: 'Bravo' });
    await waitForMediaFrom(b, [a.id], { minFrames: 10, minPackets: 25 });
    await waitForMediaFrom(a, [b.id], { minFrames: 10, minPackets: 25 });

    for (const p of [a, b]) {
      const pcs = await pcStats(p.page);
      assert.deepEqual(pcs.map((pc) => pc.role).sort(), ['publisher', 'subscriber'], `${p.name} has its two PCs`);
      for (const pc of pcs) console.log(`${p.name} ${pc.role}:`, JSON.stringify(checkTransport(`${p.name} ${pc.role}`, pc.stats)));
    }

    // Receiver reports from the SFU on each publisher's camera: loss and RTT, and new ones keep coming.
    for (const p of [a, b]) {
      const first = await waitFor(async () => { const r = await receiverReport(p); return r.rr ? r : null; },
        { what: `${p.name} to get a receiver report on its camera`, timeoutMs: RTCP_TIMEOUT_MS, progress: () => receiverReport(p) });
      assert.equal(typeof first.rr.packetsLost, 'number', `${p.name}: RR packetsLost ${JSON.stringify(first.rr)}`);
      assert.equal(typeof first.rr.roundTripTime, 'number', `${p.name}: RR gives an RTT (LSR/DLSR) ${JSON.stringify(first.rr)}`);
      assert.ok(first.rr.packetsLost <= first.out.packetsSent, `${p.name}: lost ${first.rr.packetsLost} <= sent ${first.out.packetsSent}`);
      const count = (rr) => rr.roundTripTimeMeasurements ?? rr.reportsReceived;
      assert.equal(typeof count(first.rr), 'number', `${p.name}: RR count field ${JSON.stringify(first.rr)}`);
      let last = first;
      await waitFor(async () => { last = await receiverReport(p); return count(last.rr) > count(first.rr); },
        { what: `${p.name} to get more receiver reports`, timeoutMs: RTCP_TIMEOUT_MS, progress: () => ({ first: first.rr, last: last.rr }) });
      console.log(`${p.name} RR:`, JSON.stringify({ packetsLost: last.rr.packetsLost, fractionLost: last.rr.fractionLost,
        roundTripTime: last.rr.roundTripTime, measurements: [count(first.rr), count(last.rr)], jitter: last.rr.jitter }));
    }

    // Sender reports from the SFU on the forwarded camera, and new ones keep coming.
    for (const [p, from] of [[a, b], [b, a]]) {
      const first = await waitFor(async () => { const r = await senderReport(p, from.id); return r.sr ? r : null; },
        { what: `${p.name} to get a sender report on ${from.name}'s camera`, timeoutMs: RTCP_TIMEOUT_MS,
          progress: () => senderReport(p, from.id) });
      const rising = (sr) => (first.sr.reportsSent !== undefined ? sr.reportsSent > first.sr.reportsSent : sr.packetsSent > first.sr.packetsSent);
      let last = first;
      await waitFor(async () => { last = await senderReport(p, from.id); return last.sr && rising(last.sr); },
        { what: `${p.name} to get more sender reports`, timeoutMs: RTCP_TIMEOUT_MS, progress: () => ({ first: first.sr, last: last.sr }) });
      assert.ok(last.sr.packetsSent > 0, `${p.name}: SR counts packets ${JSON.stringify(last.sr)}`);
      console.log(`${p.name} SR:`, JSON.stringify({ reportsSent: [first.sr.reportsSent, last.sr.reportsSent],
        packetsSent: [first.sr.packetsSent, last.sr.packetsSent], packetsReceived: last.inb.packetsReceived }));
    }
  });
});
