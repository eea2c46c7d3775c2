// Screen share through the page's button: a second video track on the publisher PC
// (renegotiation with the full track list), forwarded to the other participant as source
// "screen", then unpublished when sharing stops — while the camera keeps flowing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom, waitForVideoFrom, roomEvents } from './lib/stats.js';

const ROOM = 'e2e-screen';

test('screen share is published, decoded by the other page, then unpublished', { timeout: 150000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Presenter' });
    const b = await h.join({ room: ROOM, name: 'Viewer' });
    await waitForMediaFrom(b, [a.id]);

    await a.page.click('#btn-screen');
    await waitFor(async () => (await a.page.getAttribute('#btn-screen', 'aria-pressed')) === 'true',
      { what: 'the share button to be pressed' });
    const screenId = await a.page.evaluate(() => window.studyroom.localTracks.get('screen')?.trackId ?? null);
    assert.ok(screenId, 'the screen share got a server track id');

    const published = await waitFor(async () => (await roomEvents(b.page, 'trackPublished'))
      .map((e) => e.data[0]).find((tr) => tr.id === screenId), { what: 'Viewer to get trackPublished for the screen' });
    assert.equal(published.source, 'screen');
    assert.equal(published.kind, 'video');
    assert.equal(published.participantId, a.id);
    await waitForVideoFrom(b, a.id, { source: 'screen' });
    const screenEl = b.page.locator(`.tile[data-participant-id="${a.id}"] video.screen`);
    assert.equal(await screenEl.isVisible(), true, 'the viewer shows the screen video');

    await a.page.click('#btn-screen');
    await waitFor(async () => (await roomEvents(b.page, 'trackUnpublished')).some((e) => e.data[0].id === screenId),
      { what: 'Viewer to get trackUnpublished for the screen', progress: () => roomEvents(b.page, 'trackUnpublished') });
    await waitFor(async () => !(await screenEl.isVisible()), { what: 'the viewer to hide the screen video' });
    // The camera survived both renegotiations.
    await waitForVideoFrom(b, a.id, { source: 'camera' });
  });
});
