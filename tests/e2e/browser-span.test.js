// A room spanning both media shards, in headless Chromium (ARCHITECTURE.md "A room across
// shards"): with --room-span-after 1 the first learner stays on the room's home shard and
// the next ones are spread over both, so every camera crosses between shard threads in
// one direction or the other. Everyone decodes everyone; then the first joiner (the only
// one on the home shard at first) closes its tab and the others keep decoding each other;
// a late joiner gets everyone and everyone gets it. The server's relay counters must have
// moved, or the room never spanned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, waitForMediaFrom, roomEvents } from './lib/stats.js';

const ROOM = 'e2e-span';
const METRICS = 'http://127.0.0.1:9100/metrics';

async function metric(name) {
  const text = await (await fetch(METRICS)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

test('a room spanning both shards: everyone decodes everyone, the first joiner leaves, a late joiner comes', { timeout: 240000 }, async (t) => {
  const h = await startHarness(t, { serverArgs: ['--shards', '2', '--room-span-after', '1'] });
  await h.run(async () => {
    const a = await h.join({ room: ROOM, name: 'Ahn' });
    const b = await h.join({ room: ROOM, name: 'Bae' });
    const c = await h.join({ room: ROOM, name: 'Choi' });
    const everyone = [a, b, c];
    for (const p of everyone) {
      await waitForMediaFrom(p, everyone.filter((o) => o !== p).map((o) => o.id));
    }
    const relayedIn = await metric('studyroom_relayed_packets_in_total');
    assert.ok(relayedIn > 0, `packets crossed between the shards (studyroom_relayed_packets_in_total = ${relayedIn})`);

    // The first joiner closes its tab: the others are told and keep decoding each other.
    await a.page.close();
    for (const p of [b, c]) {
      await waitFor(async () => (await roomEvents(p.page, 'participantLeft')).some((e) => e.data[0].id === a.id),
        { what: `${p.name} to get participantLeft for Ahn`, timeoutMs: 30000 });
    }
    await waitForMediaFrom(b, [c.id]);
    await waitForMediaFrom(c, [b.id]);

    // A late joiner gets both, and both get it.
    const d = await h.join({ room: ROOM, name: 'Dong' });
    await waitForMediaFrom(d, [b.id, c.id]);
    await waitForMediaFrom(b, [d.id]);
    await waitForMediaFrom(c, [d.id]);
  });
});
