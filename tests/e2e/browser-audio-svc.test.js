// Audio on lossy links and scalable video, with real Chromium pages (issue 12):
// - RED: a publisher that prefers `audio/red` (setCodecPreferences, as a page asking for
//   redundancy does) sends RFC 2198 RED; a viewer whose browser accepts red gets it as
//   sent, a viewer whose answer drops red (its offer munged) gets the primary Opus frames
//   the server strips out. Both must decode the microphone with little concealment: a
//   viewer handed RED under a payload type it did not negotiate would decode nothing.
// - DTX: a publisher with StudyRoom's `dtx` option gets `usedtx=1` in the server's answer and
//   sends fewer packets than one without; its viewer plays out through the silences.
// - VP9 SVC: a publisher sends its camera as one VP9 encoding with `scalabilityMode:
//   'L3T3_KEY'`; a viewer that asked for `low` decodes a smaller picture than one on `high`
//   (the server forwards only the lowest spatial layer to it).
// One browser for the file; each part in its own room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { pcStats, rtpWithCodecs, waitFor, waitForVideoFrom, inboundStats } from './lib/stats.js';

// Publisher pages: audio transceivers prefer RED (then every other codec, Opus included).
const PREFER_RED = `(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
    const tr = add.call(this, trackOrKind, init);
    const kind = typeof trackOrKind === 'string' ? trackOrKind : trackOrKind.kind;
    if (kind === 'audio') {
      const codecs = RTCRtpSender.getCapabilities('audio').codecs;
      const red = codecs.filter((c) => c.mimeType.toLowerCase() === 'audio/red');
      tr.setCodecPreferences([...red, ...codecs.filter((c) => c.mimeType.toLowerCase() !== 'audio/red')]);
    }
    return tr;
  };
})();`;

// Viewer pages whose browser "lacks" RED: red is removed from every offer before it is
// applied, so the answer cannot accept it.
const REFUSE_RED = `(() => {
  const set = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (desc) {
    if (desc && desc.type === 'offer') {
      const lines = desc.sdp.split('\\r\\n');
      const red = new Set(lines.map((l) => /^a=rtpmap:(\\d+) red\\//i.exec(l)).filter(Boolean).map((m) => m[1]));
      const sdp = lines
        .filter((l) => { const m = /^a=(rtpmap|fmtp|rtcp-fb):(\\d+) /.exec(l); return !(m && red.has(m[2])); })
        .map((l) => l.startsWith('m=audio') ? l.split(' ').filter((p, i) => i < 3 || !red.has(p)).join(' ') : l)
        .join('\\r\\n');
      desc = { type: 'offer', sdp };
    }
    return set.call(this, desc);
  };
})();`;

// Publisher pages: the camera as one VP9 encoding with up to three spatial and three
// temporal layers, at the camera's resolution (libwebrtc drops spatial layers whose size
// would fall under 240x135, and would otherwise scale a busy machine's input down to a
// size with one spatial layer left).
const SVC_L3T3 = `(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
    const kind = typeof trackOrKind === 'string' ? trackOrKind : trackOrKind.kind;
    if (kind === 'video') init = { ...(init || {}), sendEncodings: [{ scalabilityMode: 'L3T3_KEY' }] };
    const tr = add.call(this, trackOrKind, init);
    if (kind === 'video') {
      const params = tr.sender.getParameters();
      params.degradationPreference = 'maintain-resolution';
      tr.sender.setParameters(params).catch((e) => console.warn('setParameters', e.message));
    }
    return tr;
  };
})();`;

/** The microphone stream `viewer` receives from `fromId`: its inbound-rtp with codec. */
async function micFrom(viewer, fromId) {
  const byMid = await viewer.page.evaluate(() => Object.fromEntries(window.studyroom.remoteByMid));
  const pcs = await pcStats(viewer.page);
  return pcs.filter((pc) => pc.role === 'subscriber').flatMap((pc) => rtpWithCodecs(pc.stats))
    .find((r) => r.type === 'inbound-rtp' && byMid[r.mid]?.participantId === fromId && byMid[r.mid]?.source === 'microphone');
}

/** Audio over a window of `ms`: packets, samples and the share of them concealed. */
async function audioWindow(viewer, fromId, ms) {
  const a = await waitFor(() => micFrom(viewer, fromId), { what: `${viewer.name} to receive the microphone`, timeoutMs: 15000 });
  await new Promise((r) => setTimeout(r, ms)); // the measuring window itself, not an assert
  const b = await micFrom(viewer, fromId);
  const samples = (b.stat.totalSamplesReceived || 0) - (a.stat.totalSamplesReceived || 0);
  const concealed = (b.stat.concealedSamples || 0) - (a.stat.concealedSamples || 0);
  return {
    mimeType: b.mimeType, packets: (b.stat.packetsReceived || 0) - (a.stat.packetsReceived || 0),
    bytes: (b.stat.bytesReceived || 0) - (a.stat.bytesReceived || 0),
    samples, concealedShare: samples > 0 ? concealed / samples : 1,
  };
}

/** The m=audio line of a description. */
function audioLine(sdp) {
  return (sdp || '').split('\r\n').find((l) => l.startsWith('m=audio')) || '';
}

test('RED reaches viewers with and without red; DTX is asked for and mirrored; VP9 L3T3 gives a low viewer the small layer', { timeout: 120000 }, async (t) => {
  const h = await startHarness(t);

  await t.test('audio/red preferred by the publisher', async () => {
    await h.run(async () => {
      const room = 'e2e-audio-red';
      const pub = await h.join({ room, name: 'Red publisher', initScripts: [PREFER_RED] });
      const withRed = await h.join({ room, name: 'Viewer with red', publish: false });
      const without = await h.join({ room, name: 'Viewer without red', publish: false, initScripts: [REFUSE_RED] });

      // The server's answer keeps red before Opus: the publisher's browser sends RED.
      const answer = await pub.page.evaluate(() => window.studyroom.publisherPc.remoteDescription?.sdp);
      const m = audioLine(answer).split(' ').slice(3);
      const redPt = (answer.match(/a=rtpmap:(\d+) red\/48000\/2/i) || [])[1];
      assert.ok(redPt, `the answer keeps red: ${audioLine(answer)}`);
      assert.equal(m[0], redPt, `red comes first in the answer's m=audio: ${audioLine(answer)}`);

      // Negotiation on the viewers: one accepted red, the other could not.
      const localAudio = (v) => v.page.evaluate(() => window.studyroom.subscriberPc.localDescription?.sdp);
      assert.match(await localAudio(withRed), /a=rtpmap:\d+ red\/48000\/2/i, 'the first viewer accepts red');
      assert.doesNotMatch(await localAudio(without), /red\/48000/i, 'the second viewer does not');

      const [a, b] = await Promise.all([audioWindow(withRed, pub.id, 4000), audioWindow(without, pub.id, 4000)]);
      console.log(`RED: viewer with red ${JSON.stringify(a)}; viewer without ${JSON.stringify(b)}`);
      for (const [who, w] of [['with red', a], ['without red', b]]) {
        assert.ok(w.packets >= 150, `viewer ${who}: ~50 packets/s arrive (${w.packets} in 4 s)`);
        assert.ok(w.samples >= 48000 * 3, `viewer ${who}: decodes audio (${w.samples} samples in 4 s)`);
        assert.ok(w.concealedShare < 0.2, `viewer ${who}: little concealment (${(w.concealedShare * 100).toFixed(1)} %)`);
      }
      assert.equal(b.mimeType?.toLowerCase(), 'audio/opus', 'the viewer without red receives plain Opus');
      // RED carries the previous frame too: about twice the payload bytes per packet.
      const perPacket = (w) => w.bytes / Math.max(w.packets, 1);
      assert.ok(perPacket(a) > 1.5 * perPacket(b),
        `the viewer with red receives RED (${perPacket(a).toFixed(0)} vs ${perPacket(b).toFixed(0)} bytes per packet)`);
    });
  });

  await t.test('DTX asked for by the publisher (StudyRoom dtx option)', async () => {
    await h.run(async () => {
      const room = 'e2e-audio-dtx';
      const dtx = await h.join({ room, name: 'DTX publisher', query: { dtx: 1 } });
      const plain = await h.join({ room, name: 'Plain publisher' });
      const viewer = await h.join({ room, name: 'DTX viewer', publish: false });
      const opusFmtp = (p) => p.page.evaluate(() => {
        const sdp = window.studyroom.publisherPc.remoteDescription?.sdp || '';
        const pt = (sdp.match(/a=rtpmap:(\d+) opus\/48000/i) || [])[1];
        return sdp.split('\r\n').find((l) => l.startsWith(`a=fmtp:${pt} `)) || '';
      });
      assert.match(await opusFmtp(dtx), /usedtx=1/, 'the answer mirrors usedtx=1');
      assert.match(await opusFmtp(dtx), /useinbandfec=1/, 'and keeps in-band FEC');
      assert.doesNotMatch(await opusFmtp(plain), /usedtx/, 'no DTX unless asked');

      const sentAudio = async (p) => (await pcStats(p.page)).filter((pc) => pc.role === 'publisher')
        .flatMap((pc) => rtpWithCodecs(pc.stats)).find((r) => r.type === 'outbound-rtp' && r.kind === 'audio')?.stat.packetsSent || 0;
      await waitFor(() => micFrom(viewer, dtx.id), { what: 'the viewer to receive the DTX microphone', timeoutMs: 15000 });
      // Silence: both microphones muted (the browser encodes zeros). Chromium's fake
      // microphone alone never goes quiet enough for DTX.
      for (const p of [dtx, plain]) await p.page.evaluate(() => window.studyroom.setMuted('microphone', true));
      await new Promise((r) => setTimeout(r, 1000)); // let the encoders settle into silence (not an assert)
      const [d0, p0] = [await sentAudio(dtx), await sentAudio(plain)];
      const heard = await audioWindow(viewer, dtx.id, 4000);
      const [d1, p1] = [await sentAudio(dtx), await sentAudio(plain)];
      const fmtpSent = (await pcStats(dtx.page)).filter((pc) => pc.role === 'publisher').flatMap((pc) => rtpWithCodecs(pc.stats))
        .find((r) => r.type === 'outbound-rtp' && r.kind === 'audio')?.sdpFmtpLine;
      console.log(`DTX: sent ${d1 - d0} packets in ~4 s with DTX [${fmtpSent}], ${p1 - p0} without; viewer ${JSON.stringify(heard)}`);
      assert.ok(d1 - d0 < 0.5 * (p1 - p0), `DTX sends far fewer packets in silence (${d1 - d0} vs ${p1 - p0})`);
      // The silences are not a dead stream: playout goes on and packets keep arriving.
      assert.ok(heard.packets > 0, 'packets arrive');
      assert.ok(heard.samples >= 48000 * 3, `the viewer plays out through the silences (${heard.samples} samples in 4 s)`);
    });
  });

  await t.test('VP9 L3T3_KEY: setQuality low gets the lowest spatial layer', async () => {
    await h.run(async () => {
      const room = 'e2e-vp9-svc';
      const pub = await h.join({ room, name: 'SVC publisher', query: { codec: 'VP9' }, initScripts: [SVC_L3T3] });
      const low = await h.join({ room, name: 'Low viewer', publish: false });
      const high = await h.join({ room, name: 'High viewer', publish: false });
      await low.page.evaluate((id) => window.studyroom.setQuality(id, 'camera', 'low'), pub.id);

      const sent = await waitFor(async () => (await pcStats(pub.page)).filter((pc) => pc.role === 'publisher')
        .flatMap((pc) => rtpWithCodecs(pc.stats)).find((r) => r.type === 'outbound-rtp' && r.kind === 'video' && r.stat.frameWidth),
      { what: 'the publisher to send VP9', timeoutMs: 15000 });
      assert.equal(sent.mimeType?.toLowerCase(), 'video/vp9');
      // Chromium caps the spatial layers by resolution (640x480 gives L2T3_KEY).
      assert.match(sent.stat.scalabilityMode || '', /^L[23]T3_KEY$/, 'the publisher encodes spatial and temporal layers');

      const top = await waitForVideoFrom(high, pub.id, { minFrames: 30, timeoutMs: 25000 });
      // The publisher's encoder adds its upper spatial layer as its estimate grows: wait for
      // the high viewer to decode the camera's full width.
      const camWidth = await pub.page.evaluate(() => window.studyroom.localTracks.get('camera').track.getSettings().width);
      await waitFor(async () => {
        const s = (await inboundStats(high.page)).find((x) => x.participantId === pub.id && x.source === 'camera');
        return s && s.frameWidth === camWidth;
      }, { what: `the high viewer to decode the camera's full width ${camWidth}`, timeoutMs: 25000,
        progress: async () => (await inboundStats(high.page)).map((x) => x.frameWidth) });
      const highNow = (await inboundStats(high.page)).find((x) => x.participantId === pub.id && x.source === 'camera');
      const lowNow = await waitForVideoFrom(low, pub.id, { minFrames: 30, timeoutMs: 20000 });
      console.log(`SVC: publisher ${sent.stat.frameWidth}x${sent.stat.frameHeight} ${sent.stat.scalabilityMode}; `
        + `high viewer ${highNow.frameWidth}x${highNow.frameHeight} (${top.framesDecoded} frames); `
        + `low viewer ${lowNow.frameWidth}x${lowNow.frameHeight} (${lowNow.framesDecoded} frames, ${lowNow.freezeCount} freezes)`);
      assert.ok(lowNow.frameWidth > 0, 'the low viewer decodes');
      assert.ok(lowNow.frameWidth <= highNow.frameWidth / 2,
        `the low viewer gets a lower spatial layer (${lowNow.frameWidth} vs ${highNow.frameWidth})`);
      // And keeps decoding it (frames rise on the small layer).
      const again = await waitForVideoFrom(low, pub.id, { minFrames: 20, timeoutMs: 10000 });
      assert.equal(again.frameWidth, lowNow.frameWidth, 'still the small layer');
    });
  });
});
