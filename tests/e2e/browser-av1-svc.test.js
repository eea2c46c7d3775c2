// AV1 SVC with real Chromium pages (issue 12): a publisher sends its camera as one AV1
// encoding with `scalabilityMode: 'L3T3_KEY'` (libaom; at the fake camera's 640x480 Chromium
// makes it L2T3_KEY). The server and both browsers negotiate the AV1 dependency descriptor
// header extension; the server reads it to drop spatial layers and passes it on unchanged.
// A viewer that asked for `low` must decode a picture half as wide or less than the one a
// `high` viewer decodes, and keep decoding it: Chromium's receiver accepts the descriptor
// forwarded as is while the frames of the dropped layer never arrive (their references
// stay in the layers it gets; sequence numbers have no gap). Moved back to `high`, it
// decodes the full picture again from the next key picture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { pcStats, rtpWithCodecs, waitFor, waitForVideoFrom, inboundStats } from './lib/stats.js';

const DD_URI = 'https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension';

// Publisher pages: the camera as one encoding with spatial and temporal layers, at the
// camera's resolution (as in browser-audio-svc.test.js).
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

/** The `a=extmap` id of the dependency descriptor in the first m=video section of `sdp`. */
function ddExtmap(sdp) {
  const video = (sdp || '').split('\r\nm=').find((m) => m.startsWith('video')) || '';
  return (video.split('\r\n').find((l) => l.startsWith('a=extmap:') && l.endsWith(DD_URI)) || '').split(' ')[0];
}

test('AV1 L3T3_KEY: a low viewer decodes the lower spatial layer, the dependency descriptor forwarded', { timeout: 120000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const room = 'e2e-av1-svc';
    const pub = await h.join({ room, name: 'AV1 publisher', query: { codec: 'AV1' }, initScripts: [SVC_L3T3] });
    const low = await h.join({ room, name: 'Low viewer', publish: false });
    const high = await h.join({ room, name: 'High viewer', publish: false });
    await low.page.evaluate((id) => window.studyroom.setQuality(id, 'camera', 'low'), pub.id);

    // Negotiated on both sides: the server's answer to the publisher and each viewer's
    // answer to the server's offer keep the extension.
    const pubAnswer = await pub.page.evaluate(() => window.studyroom.publisherPc.remoteDescription?.sdp);
    assert.ok(ddExtmap(pubAnswer), 'the publisher answer keeps the dependency descriptor');
    for (const v of [low, high]) {
      await waitFor(async () => ddExtmap(await v.page.evaluate(() => window.studyroom.subscriberPc.localDescription?.sdp)),
        { what: `${v.name}'s answer to keep the dependency descriptor`, timeoutMs: 15000 });
    }

    const sent = await waitFor(async () => (await pcStats(pub.page)).filter((pc) => pc.role === 'publisher')
      .flatMap((pc) => rtpWithCodecs(pc.stats)).find((r) => r.type === 'outbound-rtp' && r.kind === 'video' && r.stat.frameWidth),
    { what: 'the publisher to send AV1', timeoutMs: 15000 });
    assert.equal(sent.mimeType?.toLowerCase(), 'video/av1');
    assert.match(sent.stat.scalabilityMode || '', /^L[23]T3_KEY$/, 'the publisher encodes spatial and temporal layers');

    const camWidth = await pub.page.evaluate(() => window.studyroom.localTracks.get('camera').track.getSettings().width);
    const top = await waitForVideoFrom(high, pub.id, { minFrames: 30, timeoutMs: 25000 });
    // The encoder adds its upper spatial layer as its estimate grows.
    await waitFor(async () => {
      const s = (await inboundStats(high.page)).find((x) => x.participantId === pub.id && x.source === 'camera');
      return s && s.frameWidth === camWidth;
    }, { what: `the high viewer to decode the camera's full width ${camWidth}`, timeoutMs: 25000,
      progress: async () => (await inboundStats(high.page)).map((x) => x.frameWidth) });
    const highNow = (await inboundStats(high.page)).find((x) => x.participantId === pub.id && x.source === 'camera');
    const lowNow = await waitForVideoFrom(low, pub.id, { minFrames: 30, timeoutMs: 20000 });
    const lowCodec = (await pcStats(low.page)).filter((pc) => pc.role === 'subscriber').flatMap((pc) => rtpWithCodecs(pc.stats))
      .find((r) => r.type === 'inbound-rtp' && r.kind === 'video')?.mimeType;
    console.log(`AV1 SVC: publisher ${sent.stat.frameWidth}x${sent.stat.frameHeight} ${sent.stat.scalabilityMode} (${sent.stat.encoderImplementation}); `
      + `high viewer ${highNow.frameWidth}x${highNow.frameHeight} (${top.framesDecoded} frames); `
      + `low viewer ${lowNow.frameWidth}x${lowNow.frameHeight} ${lowCodec} (${lowNow.framesDecoded} frames, ${lowNow.freezeCount} freezes)`);
    assert.equal(lowCodec?.toLowerCase(), 'video/av1');
    assert.ok(lowNow.frameWidth > 0, 'the low viewer decodes');
    assert.ok(lowNow.frameWidth <= highNow.frameWidth / 2,
      `the low viewer gets a lower spatial layer (${lowNow.frameWidth} vs ${highNow.frameWidth})`);
    // And keeps decoding it (frames rise on the small layer).
    const again = await waitForVideoFrom(low, pub.id, { minFrames: 20, timeoutMs: 10000 });
    assert.equal(again.frameWidth, lowNow.frameWidth, 'still the small layer');

    // Back to `high`: the upper layer joins at the key picture the server asks for, and
    // the decoder takes it (the full width again).
    await low.page.evaluate((id) => window.studyroom.setQuality(id, 'camera', 'high'), pub.id);
    const up = await waitFor(async () => {
      const s = (await inboundStats(low.page)).find((x) => x.participantId === pub.id && x.source === 'camera');
      return s && s.frameWidth === highNow.frameWidth ? s : null;
    }, { what: `the low viewer, now on high, to decode the full width ${highNow.frameWidth}`, timeoutMs: 15000,
      progress: async () => (await inboundStats(low.page)).map((x) => x.frameWidth) });
    const after = await waitForVideoFrom(low, pub.id, { minFrames: 20, timeoutMs: 10000 });
    console.log(`AV1 SVC: low viewer back on high ${up.frameWidth}x${up.frameHeight}; ${after.framesDecoded} frames, ${after.freezeCount} freezes`);
    assert.equal(after.frameWidth, highNow.frameWidth, 'and keeps decoding it');
  });
});
