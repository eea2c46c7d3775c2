// A real study room in headless Chromium: three participants see and hear each other
// through the SFU, one leaves and disappears from the others' pages, and a late joiner
// gets everyone's media while the others get its media.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom, roomEvents } from './lib/stats.js';

const ROOM = 'e2e-room';

test('three participants exchange media; leave and late join update everyone', { timeout: 240000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Ahn' });
    const b = await h.join({ room: ROOM, name: 'Bae' });
    const c = await h.join({ room: ROOM, name: 'Choi' });
    const everyone = [a, b, c];
    assert.equal(new Set(everyone.map((p) => p.id)).size, 3, 'participant ids are distinct');

    // Each page decodes the other two cameras and receives the other two microphones.
    for (const p of everyone) {
      const others = everyone.filter((o) => o !== p).map((o) => o.id);
      await waitForMediaFrom(p, others);
      for (const id of others) {
        assert.equal(await p.page.locator(`.tile[data-participant-id="${id}"]`).count(), 1, `${p.name} shows a tile for ${id}`);
      }
    }

    // Choi leaves with the button: the others are told and drop the tile.
    await c.page.click('#btn-leave');
    await waitFor(() => c.page.evaluate(() => document.body.dataset.state === 'left'), { what: 'Choi page in state left' });
    for (const p of [a, b]) {
      await waitFor(async () => (await roomEvents(p.page, 'participantLeft')).some((e) => e.data[0].id === c.id),
        { what: `${p.name} to get participantLeft for Choi`, progress: () => roomEvents(p.page, 'participantLeft') });
      const left = (await roomEvents(p.page, 'participantLeft')).find((e) => e.data[0].id === c.id);
      assert.equal(left.data[0].reason, 'left', 'a clicked leave is reason "left"');
      await waitFor(async () => (await p.page.locator(`.tile[data-participant-id="${c.id}"]`).count()) === 0,
        { what: `${p.name} to remove Choi's tile` });
      assert.equal(await p.page.evaluate((id) => window.studyroom.participants.has(id), c.id), false);
    }

    // Dong joins late: gets Ahn and Bae; they get Dong.
    const d = await h.join({ room: ROOM, name: 'Dong' });
    const joinAck = await d.page.evaluate(() => [...window.studyroom.participants.keys()]);
    assert.deepEqual(joinAck.sort(), [a.id, b.id].sort(), 'late joiner sees exactly the remaining participants');
    await waitForMediaFrom(d, [a.id, b.id]);
    await waitForMediaFrom(a, [d.id]);
    await waitForMediaFrom(b, [d.id]);
    // The media from the one who left is gone for good (no stale tile came back).
    for (const p of [a, b, d]) {
      assert.equal(await p.page.locator(`.tile[data-participant-id="${c.id}"]`).count(), 0, `${p.name} shows no tile for Choi`);
    }
  });
});
