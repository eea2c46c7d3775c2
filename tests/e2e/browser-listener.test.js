// A listener (`&publish=0`) in a real browser: it receives everyone's media, sends none,
// is visible to the others as a participant without tracks, and the server refuses its
// attempt to publish anyway with `forbidden`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom, outboundStats } from './lib/stats.js';

const ROOM = 'e2e-listener';

test('a listener receives media, publishes nothing and is seen by the others', { timeout: 180000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Speaker A' });
    const b = await h.join({ room: ROOM, name: 'Speaker B' });
    const l = await h.join({ room: ROOM, name: 'Listener', publish: false });

    await waitForMediaFrom(l, [a.id, b.id]);

    const out = await outboundStats(l.page);
    assert.deepEqual(out, [], `the listener sends no RTP: ${JSON.stringify(out)}`);
    assert.equal(await l.page.evaluate(() => window.studyroom.localTracks.size), 0, 'no local tracks');
    assert.equal(await l.page.locator('#btn-mic').isVisible(), false, 'no mute-mic button for a listener');

    for (const p of [a, b]) {
      const seen = await waitFor(() => p.page.evaluate((id) => window.studyroom.participants.get(id) || null, l.id),
        { what: `${p.name} to list the listener` });
      assert.equal(seen.name, 'Listener');
      assert.deepEqual(seen.tracks, [], 'the listener has no tracks');
      assert.equal(await p.page.locator(`.tile[data-participant-id="${l.id}"]`).count(), 1, `${p.name} shows the listener's tile`);
    }

    // Publishing anyway is refused by the server, not just hidden by the page.
    const code = await l.page.evaluate(() => window.studyroom.publish().then(() => 'published', (e) => e.code));
    assert.equal(code, 'forbidden');
    assert.deepEqual(await outboundStats(l.page), [], 'still no RTP out after the refused publish');
  });
});
