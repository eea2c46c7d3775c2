// Proctoring in headless Chromium (docs/protocol.md, "Proctors"): a proctor page sees every
// learner's camera but no microphone and is invisible to the learners; a learner's tab
// going hidden and visible again shows up live in the proctor's feed and on the learner's
// tile; a proctor who joins late gets the earlier events from its join ack; learners are
// refused the proctor-only requests (Socket.IO `focusHistory` and the HTTP focus log).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'nats';
import { startHarness } from './lib/harness.js';
import { startNats } from './lib/server.js';
import { launchVisibilityBrowser } from './lib/visibility.js';
import { devToken, joinClient, ok, request } from './lib/sio-client.js';
import { inboundStats, outboundStats, roomEvents, waitFor, waitForMediaFrom, waitForVideoFrom } from './lib/stats.js';

const DANGER_BORDER = 'rgb(229, 72, 77)'; // style.css --danger: a lost learner's tile border
const FOCUS_FIELDS = ['v', 'room', 'participantId', 'participant', 'name', 'state', 'reason', 'at', 'client_at', 'lost_ms'];

// The proctor page's focus feed, top (newest) first.
function feed(page) {
  return page.$$eval('#focus-feed > li', (lis) => lis.map((li) => ({
    participantId: li.dataset.participantId, state: li.dataset.state, reason: li.dataset.reason,
    at: Number(li.dataset.at), lostMs: li.dataset.lostMs === undefined ? null : Number(li.dataset.lostMs),
    text: li.textContent.replace(/\s+/g, ' ').trim(),
  })));
}

// How the proctor page shows `participantId`'s tile: data-focus, the Away badge, the border.
function tileMark(page, participantId) {
  return page.evaluate((id) => {
    const tile = document.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"]`);
    if (!tile) return null;
    const away = tile.querySelector('.away');
    return {
      focus: tile.dataset.focus || null,
      away: !!away && away.getClientRects().length > 0 ? away.textContent : null,
      border: getComputedStyle(tile).borderTopColor,
    };
  }, participantId);
}

async function waitForMark(page, participantId, lost) {
  let last = null;
  return waitFor(async () => {
    last = await tileMark(page, participantId);
    if (!last) return null;
    // Both languages, the page's first (Accept-Language decides: see a11y.test.js).
    const badge = ['자리 비움 / Away', 'Away / 자리 비움'].includes(last.away);
    const marked = last.focus === 'lost' && badge && last.border === DANGER_BORDER;
    const clear = last.focus !== 'lost' && last.away === null && last.border !== DANGER_BORDER;
    return (lost ? marked : clear) ? last : null;
  }, { what: `tile of ${participantId} to be ${lost ? 'marked away' : 'unmarked'}`, timeoutMs: 10000, progress: () => last });
}

async function waitForFeed(page, count) {
  let last = [];
  await waitFor(async () => (last = await feed(page)).length >= count,
    { what: `${count} entries in the proctor's focus feed`, timeoutMs: 15000, progress: () => last });
  return last;
}

const pick = (ev) => Object.fromEntries(FOCUS_FIELDS.map((f) => [f, ev[f]]));

test('a proctor decodes every learner camera, gets no microphone, and learners never see it', { timeout: 240000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const room = 'proctor-media';
    const a = await h.join({ room, name: 'Ahn' });
    const b = await h.join({ room, name: 'Bae' });
    const p = await h.join({ room, name: 'Proctor Kim', role: 'proctor' });
    // A proctor allowed to publish (publish=1): learners must still get nothing from it.
    const q = await h.join({ room, name: 'Proctor Lee', role: 'proctor', query: { publish: '1' } });

    const proctorSide = await p.page.evaluate(() => ({
      role: window.studyroom.participant.role, bodyRole: document.body.dataset.role,
      publisherPc: window.studyroom.publisherPc !== null, localTracks: window.studyroom.localTracks.size,
      localTileShown: !document.querySelector('#local-tile').hidden,
      liveFeed: document.querySelector('#proctor-panel #focus-feed')?.getAttribute('aria-live') ?? null,
      others: [...window.studyroom.participants.keys()],
    }));
    assert.deepEqual(proctorSide, {
      role: 'proctor', bodyRole: 'proctor', publisherPc: false, localTracks: 0, localTileShown: false,
      liveFeed: 'polite', others: proctorSide.others,
    });
    for (const id of [a.id, b.id]) assert.ok(proctorSide.others.includes(id), `the proctor lists learner ${id}: ${proctorSide.others}`);
    assert.deepEqual(await outboundStats(p.page), [], 'the proctor sends no RTP');
    const qSends = await waitFor(async () => (await outboundStats(q.page)).filter((s) => s.packetsSent > 50).length >= 2,
      { what: 'the publishing proctor to send camera and mic', progress: () => outboundStats(q.page) });
    assert.ok(qSends);

    // Learners hear and see each other: their microphones do flow through the SFU...
    await waitForMediaFrom(a, [b.id]);
    await waitForMediaFrom(b, [a.id]);
    // ...and the proctor decodes both cameras, but gets no microphone at all.
    await waitForMediaFrom(p, [a.id, b.id], { audio: false });
    const atProctor = await inboundStats(p.page);
    assert.deepEqual(atProctor.filter((s) => s.kind === 'audio'), [], 'no inbound audio RTP at the proctor');
    const proctorMids = await p.page.evaluate(() => [...window.studyroom.remoteByMid.values()]);
    assert.deepEqual(proctorMids.filter((m) => m.source === 'microphone' || m.kind === 'audio'), [],
      `the proctor's subscriber offer carries no audio: ${JSON.stringify(proctorMids)}`);
    for (const id of [a.id, b.id]) {
      assert.equal(await p.page.locator(`.tile[data-participant-id="${id}"]`).count(), 1, `the proctor shows a tile for ${id}`);
    }

    // Learners: no proctor in their list, no tile, no event about it, no media from it.
    for (const [learner, other] of [[a, b], [b, a]]) {
      const view = await learner.page.evaluate((proctorIds) => ({
        participants: [...window.studyroom.participants.keys()],
        tiles: proctorIds.map((id) => document.querySelectorAll(`.tile[data-participant-id="${id}"]`).length),
        events: window.studyroom.eventLog.filter((e) => e.data.some((d) => d && typeof d === 'object'
          && (proctorIds.includes(d.id) || proctorIds.includes(d.participantId)))).map((e) => e.event),
        mids: [...window.studyroom.remoteByMid.values()].filter((m) => proctorIds.includes(m.participantId)),
      }), [p.id, q.id]);
      assert.deepEqual(view, { participants: [other.id], tiles: [0, 0], events: [], mids: [] },
        `${learner.name} must not know about the proctors`);
      const inbound = await inboundStats(learner.page);
      const foreign = inbound.filter((s) => s.participantId !== other.id);
      assert.deepEqual(foreign, [], `${learner.name} receives RTP only from ${other.name}`);
      assert.equal(inbound.filter((s) => s.packetsReceived > 0).length, 2, `${learner.name}: camera + mic of ${other.name}`);
    }
  });
});

test('a learner tab going hidden and visible shows as lost, then back, at the proctor and on JetStream', { timeout: 180000 }, async (t) => {
  // A real nats-server with JetStream: the same two events must land on the documented
  // subject, read back by a real NATS client.
  const natsDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-proctor-nats-'));
  const nats = await startNats({ port: 14223, storeDir: natsDir });
  t.after(async () => { await nats.stop(); await rm(natsDir, { recursive: true, force: true }); });
  const h = await startHarness(t, { serverArgs: ['--nats-url', nats.url] });
  const vis = await launchVisibilityBrowser(h.server.baseUrl);
  t.after(() => vis.close());
  await h.run(async () => {
    const room = 'proctor-focus';
    const a = await h.join({ room, name: 'Ahn', context: vis.context });
    const p = await h.join({ room, name: 'Proctor Kim', role: 'proctor' });
    await waitForVideoFrom(p, a.id, { minFrames: 10 });
    assert.deepEqual(await feed(p.page), [], 'a focused learner reports nothing');
    await waitForMark(p.page, a.id, false);

    await vis.hide(a.page);
    let entries = await waitForFeed(p.page, 1);
    assert.deepEqual(entries.map((e) => [e.participantId, e.state, e.reason, e.lostMs]), [[a.id, 'lost', 'hidden', null]]);
    assert.match(entries[0].text, /Ahn.*(이탈 \/ Left|Left \/ 이탈).*(탭 숨김 \/ Tab hidden|Tab hidden \/ 탭 숨김)/);
    await waitForMark(p.page, a.id, true);

    await vis.show(a.page);
    entries = await waitForFeed(p.page, 2);
    assert.deepEqual(entries.map((e) => [e.participantId, e.state, e.reason]),
      [[a.id, 'regained', 'visible'], [a.id, 'lost', 'hidden']], 'newest on top');
    assert.ok(entries[0].lostMs > 0, `a lost duration on regained: ${JSON.stringify(entries[0])}`);
    assert.ok(entries[0].at >= entries[1].at, 'regained after lost');
    assert.match(entries[0].text, /(복귀 \/ Back|Back \/ 복귀).*\((자리 비운 시간 \d+\.\d초 \/ away \d+\.\d s|away \d+\.\d s \/ 자리 비운 시간 \d+\.\d초)\)/);
    await waitForMark(p.page, a.id, false);

    // The pushes are FocusEvents (docs/protocol.md), lost_ms by the server's clock.
    const identity = await a.page.evaluate(() => window.studyroom.participant.identity);
    const pushed = (await roomEvents(p.page, 'focus')).map((e) => e.data[0]);
    assert.equal(pushed.length, 2, JSON.stringify(pushed));
    const [lost, back] = pushed;
    for (const [ev, state, reason] of [[lost, 'lost', 'hidden'], [back, 'regained', 'visible']]) {
      assert.deepEqual({ ...pick(ev), at: 0, client_at: 0, lost_ms: 0 },
        { v: 1, room, participantId: a.id, participant: identity, name: 'Ahn', state, reason, at: 0, client_at: 0, lost_ms: 0 });
      assert.equal(typeof ev.at, 'number');
      assert.equal(typeof ev.client_at, 'number');
    }
    assert.equal(lost.lost_ms, null);
    assert.equal(back.lost_ms, back.at - lost.at, 'lost_ms is the time between the two events');
    assert.deepEqual(entries.map((e) => e.at), [back.at, lost.at]);

    // The learner sent exactly these two (the blur that precedes a tab switch is not a third).
    const sent = (await roomEvents(a.page, 'focusReported')).map((e) => e.data[0]);
    assert.deepEqual(sent.map((s) => [s.state, s.reason, s.ack.ok, !!s.ack.duplicate]),
      [['lost', 'hidden', true, false], ['regained', 'visible', true, false]]);
    assert.deepEqual(sent.map((s) => s.at), [lost.client_at, back.client_at]);

    // The proctor can ask for the history too.
    assert.deepEqual(await p.page.evaluate((id) => window.studyroom.focusHistory(id), a.id), pushed);

    // And JetStream has both, in order, on studyroom.proctoring.<room>.focus.
    const nc = await connect({ servers: nats.url, reconnect: false });
    try {
      const jsm = await nc.jetstreamManager();
      let msgs = [];
      await waitFor(async () => {
        const info = await jsm.streams.info('STUDYROOM_PROCTORING').catch(() => null);
        if (!info || info.state.messages < 2) return false;
        msgs = [];
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const m = await jsm.streams.getMessage('STUDYROOM_PROCTORING', { seq });
          msgs.push({ subject: m.subject, payload: m.json() });
        }
        return true;
      }, { what: 'two focus events in the JetStream stream', timeoutMs: 15000 });
      assert.deepEqual(msgs.map((m) => m.subject), [`studyroom.proctoring.${room}.focus`, `studyroom.proctoring.${room}.focus`]);
      assert.deepEqual(msgs.map((m) => [m.payload.participant, m.payload.name, m.payload.state, m.payload.reason, m.payload.lost_ms]),
        [[identity, 'Ahn', 'lost', 'hidden', null], [identity, 'Ahn', 'regained', 'visible', back.lost_ms]]);
      assert.deepEqual(msgs.map((m) => m.payload.at), [lost.at, back.at]);
      assert.ok(msgs.every((m) => m.payload.v === 1 && m.payload.room === room));
    } finally {
      await nc.close();
    }
  });
});

test('a proctor joining late gets the earlier focus events in its join ack and feed', { timeout: 120000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const room = 'proctor-late';
    const x = await joinClient(h.server.baseUrl, { room, name: 'Xu' });
    const y = await joinClient(h.server.baseUrl, { room, name: 'Yoon' });
    t.after(() => { x.close(); y.close(); });
    const sent = [];
    for (const [who, state, reason] of [[x, 'lost', 'hidden'], [x, 'regained', 'visible'], [y, 'lost', 'blur']]) {
      const ack = await ok(who.socket, 'focus', { state, reason, at: Date.now() });
      assert.ok(ack.event, `an event, not a duplicate: ${JSON.stringify(ack)}`);
      sent.push(ack.event);
    }

    const p = await h.join({ room, name: 'Late Proctor', role: 'proctor' });
    const history = await roomEvents(p.page, 'focusHistory');
    assert.equal(history.length, 1, 'one focusHistory from the join ack');
    assert.deepEqual(history[0].data[0], sent, 'the join ack carries the history, oldest first');
    const entries = await waitForFeed(p.page, 3);
    assert.deepEqual(entries.map((e) => [e.participantId, e.state, e.reason, e.at]),
      [...sent].reverse().map((e) => [e.participantId, e.state, e.reason, e.at]), 'the feed shows it, newest on top');
    assert.equal(entries[1].lostMs, sent[1].lost_ms);
    await waitForMark(p.page, y.id, true);
    await waitForMark(p.page, x.id, false);

    // Live events carry on from there.
    const back = (await ok(y.socket, 'focus', { state: 'regained', reason: 'focus', at: Date.now() })).event;
    const after = await waitForFeed(p.page, 4);
    assert.deepEqual([after[0].participantId, after[0].state, after[0].at], [y.id, 'regained', back.at]);
    await waitForMark(p.page, y.id, false);
  });
});

test('learners are refused proctor-only requests: focusHistory and the HTTP focus log', { timeout: 120000 }, async (t) => {
  const h = await startHarness(t);
  await h.run(async () => {
    const room = 'proctor-auth';
    const base = h.server.baseUrl;
    const x = await joinClient(base, { room, name: 'Xu' });
    const y = await joinClient(base, { room, name: 'Yoon' });
    const sp = await joinClient(base, { room, name: 'Proctor Socket', role: 'proctor' });
    t.after(() => { x.close(); y.close(); sp.close(); });
    const xEvents = [];
    for (const state of ['lost', 'regained']) {
      xEvents.push((await ok(x.socket, 'focus', { state, reason: state === 'lost' ? 'blur' : 'focus', at: Date.now() })).event);
    }
    const yLost = (await ok(y.socket, 'focus', { state: 'lost', reason: 'hidden', at: Date.now() })).event;

    // Socket.IO: a learner's focusHistory is forbidden (with or without a participant),
    // a proctor's focus report too (learners only).
    for (const payload of [{}, { participantId: x.id }]) {
      const ack = await request(x.socket, 'focusHistory', payload);
      assert.equal(ack?.error?.code, 'forbidden', `learner focusHistory ${JSON.stringify(payload)}: ${JSON.stringify(ack)}`);
    }
    const proctorFocus = await request(sp.socket, 'focus', { state: 'lost', reason: 'hidden', at: Date.now() });
    assert.equal(proctorFocus?.error?.code, 'forbidden', `a proctor reporting focus: ${JSON.stringify(proctorFocus)}`);
    assert.deepEqual((await ok(sp.socket, 'focusHistory', { participantId: x.id })).events, xEvents);
    assert.deepEqual((await ok(sp.socket, 'focusHistory', {})).events, [...xEvents, yLost]);

    // The browser client surfaces the same codes.
    const learnerPage = await h.join({ room, name: 'Ahn' });
    const proctorPage = await h.join({ room, name: 'Proctor Kim', role: 'proctor' });
    const refused = await learnerPage.page.evaluate(() => window.studyroom.focusHistory().then(
      (events) => `accepted: ${JSON.stringify(events)}`, (e) => e.code));
    assert.equal(refused, 'forbidden');
    assert.deepEqual(await proctorPage.page.evaluate((id) => window.studyroom.focusHistory(id), y.id), [yLost]);

    // HTTP focus log: 401 without a (valid) token, 403 for a learner or another room's
    // proctor, 200 with only that participant's events for this room's proctor.
    const url = `${base}/api/rooms/${room}/focus?participant=${encodeURIComponent(x.identity)}`;
    const get = async (token) => {
      const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      const text = await res.text();
      return { status: res.status, text, body: (() => { try { return JSON.parse(text); } catch { return null; } })() };
    };
    const proctorToken = (await devToken(base, { room, name: 'Proctor HTTP', role: 'proctor' })).token;
    const otherRoomProctor = (await devToken(base, { room: 'another-room', name: 'Proctor Else', role: 'proctor' })).token;
    const cases = [
      ['no token', null, 401], ['garbage token', 'not-a-jwt', 401], ['learner token', x.token, 403],
      ['another room\'s proctor', otherRoomProctor, 403], ['proctor token', proctorToken, 200],
    ];
    for (const [what, token, status] of cases) {
      const res = await get(token);
      assert.equal(res.status, status, `${what}: GET ${url} -> ${res.status} ${res.text}`);
      if (status !== 200) assert.equal(typeof res.body?.error?.code, 'string', `${what}: an error code in ${res.text}`);
    }
    assert.deepEqual((await get(proctorToken)).body?.events, xEvents, 'only that participant\'s events');
  });
});
