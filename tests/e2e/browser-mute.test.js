// Mute through the page's buttons: the other participant gets `trackMuted` for the right
// track and shows the muted indicator; unmuting clears it. Covers mic and camera.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, roomEvents } from './lib/stats.js';

const ROOM = 'e2e-mute';

async function localTrackId(page, source) {
  return page.evaluate((s) => window.studyroom.localTracks.get(s)?.trackId ?? null, source);
}

async function mutedEvents(page, trackId) {
  return (await roomEvents(page, 'trackMuted')).map((e) => e.data[0]).filter((m) => m.id === trackId);
}

test('mute buttons reach the other participant as trackMuted and indicators', { timeout: 120000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: '가나' });
    const b = await h.join({ room: ROOM, name: 'Observer' });
    const tileOfA = b.page.locator(`.tile[data-participant-id="${a.id}"]`);
    await waitFor(async () => (await tileOfA.count()) === 1, { what: 'B to show A\'s tile' });

    for (const [button, source, attr] of [['#btn-mic', 'microphone', 'micMuted'], ['#btn-cam', 'camera', 'camMuted']]) {
      const trackId = await localTrackId(a.page, source);
      assert.ok(trackId, `A's ${source} has a server track id`);
      await waitFor(() => b.page.evaluate(([pid, tid]) =>
        !!window.studyroom.participants.get(pid)?.tracks.some((tr) => tr.id === tid), [a.id, trackId]),
      { what: `B to know A's ${source} track ${trackId}` });
      assert.equal(await tileOfA.getAttribute(`data-${attr === 'micMuted' ? 'mic' : 'cam'}-muted`), 'false', `${source} starts unmuted`);

      await a.page.click(button);
      await waitFor(async () => (await mutedEvents(b.page, trackId)).some((m) => m.muted === true),
        { what: `B to get trackMuted(muted) for A's ${source}`, progress: () => roomEvents(b.page, 'trackMuted') });
      const ev = (await mutedEvents(b.page, trackId)).find((m) => m.muted === true);
      assert.equal(ev.participantId, a.id);
      // The button flips once A's own request was acknowledged, which may be after B heard of it.
      await waitFor(async () => (await a.page.getAttribute(button, 'aria-pressed')) === 'true',
        { what: `${button} aria-pressed=true` });
      assert.equal(await a.page.evaluate((s) => window.studyroom.localTracks.get(s).track.enabled, source), false,
        'the muted local track is disabled');
      await waitFor(async () => (await tileOfA.evaluate((el, k) => el.dataset[k], attr)) === 'true',
        { what: `B's tile to show A's ${source} muted` });
      assert.equal(await tileOfA.locator(source === 'microphone' ? '.mic-off' : '.cam-off').isVisible(), true);

      await a.page.click(button);
      await waitFor(async () => (await mutedEvents(b.page, trackId)).some((m) => m.muted === false),
        { what: `B to get trackMuted(unmuted) for A's ${source}`, progress: () => roomEvents(b.page, 'trackMuted') });
      await waitFor(async () => (await a.page.getAttribute(button, 'aria-pressed')) === 'false',
        { what: `${button} aria-pressed=false` });
      await waitFor(async () => (await tileOfA.evaluate((el, k) => el.dataset[k], attr)) === 'false',
        { what: `B's tile to show A's ${source} unmuted` });
    }
  });
});
