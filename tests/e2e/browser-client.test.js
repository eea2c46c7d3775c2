// The page's own client (sio.js + studyroom.js, served by the server) against the real
// server's Socket.IO: refused handshakes surface as rejected connect() with the protocol's
// error code, and request errors as rejected promises carrying the ack's error code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';

test('client library reports handshake and request errors with their codes', { timeout: 60000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const context = await h.browser.newContext();
    const page = await context.newPage();
    await page.goto(`${h.server.baseUrl}/`);
    // Without room/name the page shows its join form and does not connect.
    assert.equal(await page.locator('#join-form').isVisible(), true, 'the join form is shown');

    const codes = await page.evaluate(async () => {
      const { StudyRoom } = await import('/studyroom.js');
      const refused = async (token) => new StudyRoom().connect(token).then(() => 'connected', (e) => e.code);
      const res = await fetch('/dev/token?room=e2e-client&name=Kim');
      const { token } = await res.json();
      const room = new StudyRoom();
      await room.connect(token);
      const beforeJoin = await room._request('mute', { trackId: 'nope', muted: true }).then(() => 'ok', (e) => e.code);
      await room.join();
      const secondJoin = await room.join().then(() => 'ok', (e) => e.code);
      const unknownTrack = await room.setMuted('camera', true).then(() => 'ok', (e) => e.code);
      const serverUnknownTrack = await room._request('mute', { trackId: 'nope', muted: true }).then(() => 'ok', (e) => e.code);
      const noOffer = await room._request('answer', { sdp: 'v=0\r\n' }).then(() => 'ok', (e) => e.code);
      const badShape = await room._request('mute', { trackId: 42 }).then(() => 'ok', (e) => e.code);
      await room.leave();
      return {
        missing: await refused(undefined),
        invalid: await refused('not-a-jwt'),
        beforeJoin, secondJoin, unknownTrack, serverUnknownTrack, noOffer, badShape, state: room.state,
      };
    });
    assert.deepEqual(codes, {
      missing: 'missing_token',
      invalid: 'invalid_token',
      beforeJoin: 'not_joined',
      secondJoin: 'already_joined',
      unknownTrack: 'unknown_track', // client side: nothing published
      serverUnknownTrack: 'unknown_track',
      noOffer: 'no_offer_pending',
      badShape: 'bad_request',
      state: 'left',
    });
    await context.close();
  });
});
