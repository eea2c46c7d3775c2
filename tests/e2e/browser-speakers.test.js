// Active speakers from the audio-level header extension: Chromium's fake microphone beeps,
// so a publishing participant must show up in an `activeSpeakers` event at a listener within
// ~10 s, the silent listener never does, muting the mic takes the speaker out of the set and
// unmuting puts it back. The server counts a level above -45 dBov as speaking; the page's
// measured levels (getStats audioLevel) are printed for when this fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './lib/harness.js';
import { waitFor, roomEvents, pcStats } from './lib/stats.js';

const ROOM = 'e2e-speakers';
const SPEAKER_TIMEOUT_MS = 10000;

/** The speaker lists `p` got in `activeSpeakers` events, oldest first. */
async function speakerEvents(p) {
  return (await roomEvents(p.page, 'activeSpeakers')).map((e) => e.data[0]);
}

/** Audio levels (0..1) as the browsers measure them: the mic at the source, and as received. */
async function audioLevels(speaker, listener) {
  const all = async (p) => (await pcStats(p.page)).flatMap((pc) => pc.stats);
  const source = (await all(speaker)).find((s) => s.type === 'media-source' && s.kind === 'audio');
  const inbound = (await all(listener)).find((s) => s.type === 'inbound-rtp' && s.kind === 'audio');
  return { micAudioLevel: source?.audioLevel, receivedAudioLevel: inbound?.audioLevel };
}

test('a beeping publisher becomes an active speaker; muting removes it', { timeout: 60000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const listener = await h.join({ room: ROOM, name: 'Listener', publish: false });
    const speaker = await h.join({ room: ROOM, name: 'Speaker' });
    const levels = () => audioLevels(speaker, listener);
    const lists = (speakers) => speakers.some((s) => s.id === speaker.id);

    const heard = await waitFor(async () => (await speakerEvents(listener)).find(lists),
      { what: 'the listener to get activeSpeakers listing the speaker', timeoutMs: SPEAKER_TIMEOUT_MS,
        progress: async () => ({ events: await speakerEvents(listener), ...(await levels()) }) });
    const entry = heard.find((s) => s.id === speaker.id);
    assert.ok(entry.level > 0 && entry.level <= 1, `level in (0, 1]: ${entry.level}`);
    console.log('speaking:', JSON.stringify({ event: heard, ...(await levels()) }));

    // Nothing took the speaker out again while it kept beeping.
    assert.ok(lists((await speakerEvents(listener)).at(-1)), 'the latest event still lists the speaker');

    const beforeMute = (await speakerEvents(listener)).length;
    await speaker.page.evaluate(() => window.studyroom.setMuted('microphone', true));
    await waitFor(async () => (await speakerEvents(listener)).slice(beforeMute).some((s) => !lists(s)),
      { what: 'an activeSpeakers event without the muted speaker', timeoutMs: SPEAKER_TIMEOUT_MS,
        progress: async () => ({ events: await speakerEvents(listener), ...(await levels()) }) });

    const beforeUnmute = (await speakerEvents(listener)).length;
    await speaker.page.evaluate(() => window.studyroom.setMuted('microphone', false));
    await waitFor(async () => (await speakerEvents(listener)).slice(beforeUnmute).some(lists),
      { what: 'an activeSpeakers event listing the unmuted speaker', timeoutMs: SPEAKER_TIMEOUT_MS,
        progress: async () => ({ events: await speakerEvents(listener), ...(await levels()) }) });

    const events = await speakerEvents(listener);
    assert.ok(events.every((s) => !s.some((x) => x.id === listener.id)), `the listener never speaks: ${JSON.stringify(events)}`);
    for (const s of events) {
      assert.deepEqual(s.map((x) => x.level), s.map((x) => x.level).sort((x, y) => y - x), 'loudest first');
    }
  });
});
