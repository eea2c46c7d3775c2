// Every video codec Chromium sends (VP8, VP9, H264, AV1) goes through the SFU: a publisher
// page forces its camera's codec (`&codec=X`, StudyRoom's videoCodec), a listener page in
// the same room decodes it, and the codec the listener's browser reports is that one.
// Audio must arrive as Opus. One browser for the whole file; two pages per codec, closed
// before the next codec, each codec in its own room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { clientFromTree } from './lib/tree-client.js';
import { waitFor, waitForVideoFrom, pcStats, rtpWithCodecs } from './lib/stats.js';

const CODECS = ['VP8', 'VP9', 'H264', 'AV1'];
const MIN_FRAMES = 15;
const MIN_AUDIO_PACKETS = 25;

/** The camera and microphone streams `participant` receives from `fromId`, with codecs. */
async function receivedFrom(participant, fromId) {
  const byMid = await participant.page.evaluate(() => Object.fromEntries(window.studyroom.remoteByMid));
  const pcs = await pcStats(participant.page);
  const inbound = pcs.filter((pc) => pc.role === 'subscriber')
    .flatMap((pc) => rtpWithCodecs(pc.stats)).filter((r) => r.type === 'inbound-rtp');
  const from = (source) => inbound.find((r) => byMid[r.mid]?.participantId === fromId && byMid[r.mid]?.source === source);
  return { camera: from('camera'), microphone: from('microphone') };
}

async function sentVideo(participant) {
  const pcs = await pcStats(participant.page);
  return pcs.filter((pc) => pc.role === 'publisher').flatMap((pc) => rtpWithCodecs(pc.stats))
    .filter((r) => r.type === 'outbound-rtp' && r.kind === 'video');
}

test('VP8, VP9, H264 and AV1 cameras are forwarded and decoded; audio is Opus', { timeout: 90000 }, async (t) => {
  const h = await startHarness(t);
  const served = await (await fetch(`${h.server.baseUrl}/studyroom.js`)).text();
  assert.ok(clientFromTree() || served.includes('videoCodec'),
    'the client the server embeds (GET /studyroom.js) has no videoCodec option: the binary is older than '
    + 'signaling/web. Rebuild studyroom, or set E2E_CLIENT_FROM_TREE=1 to serve the tree\'s client.');

  for (const codec of CODECS) {
    await t.test(codec, async () => {
      const room = `e2e-codec-${codec.toLowerCase()}`;
      const pages = [];
      try {
        await h.run(async () => {
          const pub = await h.join({ room, name: `Pub ${codec}`, query: { codec } });
          pages.push(pub);
          const sub = await h.join({ room, name: `Sub ${codec}`, publish: false });
          pages.push(sub);

          // The publisher really sends the forced codec, and the server names it so.
          const sent = await waitFor(async () => (await sentVideo(pub)).find((r) => r.mimeType && r.stat.packetsSent > 0),
            { what: `${pub.name} to send video`, timeoutMs: 10000, progress: () => sentVideo(pub) });
          assert.equal(sent.mimeType.toLowerCase(), `video/${codec}`.toLowerCase(), `the publisher sends ${codec}`);
          const tracks = await sub.page.evaluate((id) => window.studyroom.participants.get(id)?.tracks ?? [], pub.id);
          assert.deepEqual(tracks.map((tr) => [tr.source, tr.codec]).sort(),
            [['camera', codec.toLowerCase()], ['microphone', 'opus']], `the server's Track.codec for ${codec}`);

          // The listener decodes it: frames rising, and its decoder's codec is the one sent.
          const video = await waitForVideoFrom(sub, pub.id, { minFrames: MIN_FRAMES, timeoutMs: 20000 });
          assert.ok(video.frameWidth > 0 && video.frameHeight > 0, `decoded frames have a size (${video.frameWidth}x${video.frameHeight})`);
          const first = await receivedFrom(sub, pub.id);
          assert.ok(first.camera, `${sub.name} has an inbound-rtp for the camera`);
          assert.equal(first.camera.mimeType?.toLowerCase(), `video/${codec}`.toLowerCase(),
            `received video codec (fmtp ${first.camera.sdpFmtpLine})`);

          // Audio arrives as Opus, packets rising.
          assert.ok(first.microphone, `${sub.name} has an inbound-rtp for the microphone`);
          assert.equal(first.microphone.mimeType?.toLowerCase(), 'audio/opus', 'received audio codec');
          const start = first.microphone.stat.packetsReceived || 0;
          let last = first;
          await waitFor(async () => {
            last = await receivedFrom(sub, pub.id);
            return (last.microphone?.stat.packetsReceived || 0) - start >= MIN_AUDIO_PACKETS;
          }, { what: `${sub.name} to receive ${MIN_AUDIO_PACKETS} more Opus packets`, timeoutMs: 10000,
          progress: () => ({ start, now: last.microphone?.stat.packetsReceived }) });
          console.log(`${codec}: sent ${sent.mimeType} [${sent.sdpFmtpLine || ''}] -> received ${last.camera.mimeType} `
            + `[${last.camera.sdpFmtpLine || ''}] ${video.frameWidth}x${video.frameHeight}, ${last.camera.stat.framesDecoded} frames; `
            + `${last.microphone.mimeType} ${last.microphone.stat.packetsReceived} packets`);
        });
      } finally {
        for (const p of pages) await p.close();
      }
    });
  }

  await t.test('an unknown codec is refused by the page with unsupported_codec', async () => {
    await assert.rejects(h.join({ room: 'e2e-codec-bad', name: 'Pub NOPE', query: { codec: 'NOPE' } }),
      /failed to join: .*unsupported_codec: this browser cannot send NOPE/);
  });
});
