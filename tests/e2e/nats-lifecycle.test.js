// Room lifecycle events and platform commands over NATS (docs/events.md), with a real
// `nats-server -js` and studyroom started with NATS_URL:
// 1. a join / publish / mute / screen share / unshare / leave sequence produces the
//    documented events on studyroom.room.<room>.<type>, in order, numbered without gaps,
//    and the same messages are stored in the JetStream stream STUDYROOM_EVENTS;
// 2. every command (rooms.list, track.mute, participant.remove, room.close) works on a real
//    room — the affected clients see it — and bad commands get their error codes;
// 3. NATS stopped mid-sequence: joins and leaves carry on, and after the restart the
//    stream holds every event, in order, none twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, StringCodec } from 'nats';
import { startNats, startServer } from './lib/server.js';
import { launchBrowser, openParticipant } from './lib/browser.js';
import { joinClient, ok } from './lib/sio-client.js';
import { waitFor } from './lib/stats.js';

const NATS_PORT = 14222;
const STREAM = 'STUDYROOM_EVENTS';
const sc = StringCodec();

// Collects every message on `subject` (core subscription): [{subject, data}].
function collect(nc, subject) {
  const got = [];
  const sub = nc.subscribe(subject);
  (async () => { for await (const m of sub) got.push({ subject: m.subject, data: JSON.parse(sc.decode(m.data)) }); })();
  return got;
}

async function command(nc, name, body) {
  const payload = typeof body === 'string' ? body : JSON.stringify(body ?? {});
  const m = await nc.request(`studyroom.cmd.${name}`, sc.encode(payload), { timeout: 10000 });
  return JSON.parse(sc.decode(m.data));
}

async function withWorld(t, fn) {
  const storeDir = await mkdtemp(path.join(os.tmpdir(), 'studyroom-nats-'));
  const w = { storeDir, nats: await startNats({ port: NATS_PORT, storeDir }), server: null, nc: null, browser: null };
  t.after(async () => {
    if (w.nc) await w.nc.close().catch(() => {});
    if (w.browser) await w.browser.close().catch(() => {});
    if (w.server) await w.server.stop();
    await w.nats.stop();
    await rm(storeDir, { recursive: true, force: true });
  });
  try {
    w.server = await startServer({ env: { NATS_URL: w.nats.url } });
    w.nc = await connect({ servers: w.nats.url });
    // The server subscribes to commands once connected: wait until one answers.
    await waitFor(async () => {
      try { return (await command(w.nc, 'rooms.list', {})).ok === true; } catch { return false; }
    }, { what: 'studyroom to answer NATS commands', timeoutMs: 20000 });
    await fn(w);
  } catch (e) {
    console.error(`==== studyroom log (tail)\n${w.server ? w.server.logs().split('\n').slice(-200).join('\n') : '(not started)'}`);
    console.error(`==== nats-server log (tail)\n${w.nats.logs().split('\n').slice(-40).join('\n')}`);
    throw e;
  }
}

function assertEnvelope(events, room) {
  const seqs = events.map((e) => e.data.seq);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `seq without gaps: ${seqs}`);
  for (const e of events) {
    assert.equal(e.data.v, 1);
    assert.equal(e.data.room, room);
    assert.equal(e.subject, `studyroom.room.${room}.${e.data.type}`);
    assert.equal(typeof e.data.node, 'string');
    assert.ok(Number.isInteger(e.data.at) && e.data.at > 1.7e12, `at is ms since the epoch: ${e.data.at}`);
  }
}

test('lifecycle events for a join/publish/mute/share/leave sequence arrive in order', { timeout: 180000 }, async (t) => {
  await withWorld(t, async (w) => {
    const ROOM = 'nats-life';
    const got = collect(w.nc, 'studyroom.room.>');
    w.browser = await launchBrowser();
    const ann = await openParticipant(w.browser, w.server.baseUrl, { room: ROOM, name: 'Ann' });
    const annIdentity = await ann.page.evaluate(() => window.studyroom.participant.identity);
    await waitFor(() => got.filter((e) => e.data.type === 'track.published').length === 2,
      { what: 'camera and microphone published', timeoutMs: 30000, progress: () => got.map((e) => e.data.type) });
    const bob = await joinClient(w.server.baseUrl, { room: ROOM, name: 'Bob' });
    await ann.page.evaluate(() => window.studyroom.setMuted('microphone', true));
    await ann.page.click('#btn-screen');
    await waitFor(async () => (await ann.page.evaluate(() => window.studyroom.localTracks.get('screen')?.trackId ?? null)) !== null,
      { what: 'the screen share to be published' });
    await ann.page.click('#btn-screen');
    await waitFor(() => got.some((e) => e.data.type === 'track.unpublished'), { what: 'track.unpublished', timeoutMs: 30000 });
    await ok(bob.socket, 'leave', {});
    await ann.page.evaluate(() => window.studyroom.leave());
    await waitFor(() => got.some((e) => e.data.type === 'room.ended'),
      { what: 'room.ended', timeoutMs: 30000, progress: () => got.map((e) => e.data.type) });

    const types = got.map((e) => e.data.type);
    assert.deepEqual(types, [
      'room.started', 'participant.joined', 'track.published', 'track.published',
      'participant.joined', 'track.muted', 'track.published', 'track.unpublished',
      'participant.left', 'track.unpublished', 'track.unpublished', 'participant.left', 'room.ended',
    ]);
    assertEnvelope(got, ROOM);
    const [, annJoined, pub1, pub2, bobJoined, muted, shared, unshared, bobLeft, end1, end2, annLeft] = got.map((e) => e.data);
    assert.deepEqual(
      { id: annJoined.participant.id, identity: annJoined.participant.identity, name: annJoined.participant.name, role: annJoined.participant.role },
      { id: ann.id, identity: annIdentity, name: 'Ann', role: 'learner' });
    assert.deepEqual([pub1, pub2].map((e) => [e.track.source, e.track.codec]).sort(), [['camera', 'vp8'], ['microphone', 'opus']],
      'Track.codec: the MIME subtype in lower case (docs/protocol.md)');
    for (const e of [pub1, pub2, muted, shared, unshared]) assert.deepEqual(e.participant, { id: ann.id, identity: annIdentity });
    assert.equal(bobJoined.participant.id, bob.id);
    assert.equal(muted.track.source, 'microphone');
    assert.equal(muted.track.muted, true);
    assert.equal(shared.track.source, 'screen');
    assert.equal(unshared.track.id, shared.track.id);
    assert.deepEqual([bobLeft.participant.id, bobLeft.reason], [bob.id, 'left']);
    assert.equal(annLeft.participant.id, ann.id);
    // Ann's camera and microphone end with her, before she leaves; each once.
    assert.deepEqual([end1, end2].map((e) => e.track.id).sort(), [pub1, pub2].map((e) => e.track.id).sort());
    for (const e of [end1, end2]) assert.deepEqual(e.participant, { id: ann.id, identity: annIdentity });

    // The same events are in JetStream, in the same order.
    const jsm = await w.nc.jetstreamManager();
    const info = await waitFor(async () => {
      const i = await jsm.streams.info(STREAM);
      return i.state.messages >= got.length ? i : null;
    }, { what: `${STREAM} to hold every event` });
    assert.deepEqual(info.config.subjects, ['studyroom.room.>']);
    assert.equal(info.state.messages, got.length);
    for (let seq = info.state.first_seq, i = 0; seq <= info.state.last_seq; seq++, i++) {
      const m = await jsm.streams.getMessage(STREAM, { seq });
      assert.deepEqual(m.json(), got[i].data, `stream message ${seq}`);
    }
  });
});

test('platform commands: list rooms, mute a track, remove a participant, close a room; bad commands get error codes', { timeout: 180000 }, async (t) => {
  await withWorld(t, async (w) => {
    const ROOM = 'nats-cmd';
    w.browser = await launchBrowser();
    const ann = await openParticipant(w.browser, w.server.baseUrl, { room: ROOM, name: 'Ann' });
    const annIdentity = await ann.page.evaluate(() => window.studyroom.participant.identity);
    const bob = await joinClient(w.server.baseUrl, { room: ROOM, name: 'Bob' });
    const carol = await joinClient(w.server.baseUrl, { room: ROOM, name: 'Carol' });
    const dave = await joinClient(w.server.baseUrl, { room: 'nats-other', name: 'Dave' });
    t.after(() => { for (const c of [bob, carol, dave]) c.close(); });

    // rooms.list: both rooms, with their participants and Ann's tracks.
    const list = await waitFor(async () => {
      const r = await command(w.nc, 'rooms.list', {});
      const mine = r.rooms && r.rooms.find((x) => x.room === ROOM);
      return mine && mine.participants.find((p) => p.id === ann.id)?.tracks.length === 2 ? r : null;
    }, { what: "rooms.list to show Ann's two tracks" });
    assert.equal(list.ok, true);
    assert.deepEqual(list.rooms.map((r) => r.room), ['nats-cmd', 'nats-other']);
    assert.deepEqual(list.rooms[0].participants.map((p) => p.name), ['Ann', 'Bob', 'Carol']);

    // track.mute by participant identity + source: everyone hears it, Ann's page mutes.
    const muted = await command(w.nc, 'track.mute', { room: ROOM, participant: annIdentity, source: 'microphone' });
    assert.equal(muted.ok, true, JSON.stringify(muted));
    assert.equal(muted.participant, ann.id);
    await waitFor(() => bob.inbox.some((m) => m.event === 'trackMuted' && m.data.id === muted.track && m.data.muted === true),
      { what: 'Bob to get trackMuted for Ann\'s microphone' });
    await waitFor(() => ann.page.evaluate(() => window.studyroom.localTracks.get('microphone').track.enabled === false),
      { what: "Ann's page to stop sending its microphone" });

    // participant.remove by id: Carol is told and disconnected, the others see her leave.
    const removed = await command(w.nc, 'participant.remove', { room: ROOM, participant: carol.id, reason: 'cheating' });
    assert.deepEqual([removed.ok, removed.participant], [true, carol.id]);
    await waitFor(() => carol.inbox.some((m) => m.event === 'removed' && m.data.reason === 'cheating'), { what: 'Carol told she was removed' });
    await waitFor(() => !carol.socket.connected, { what: 'Carol disconnected' });
    await waitFor(() => bob.inbox.some((m) => m.event === 'participantLeft' && m.data.id === carol.id && m.data.reason === 'removed'),
      { what: 'Bob to see Carol removed' });

    // Errors: each with its code, and nothing happens to the room.
    const errors = [
      ['nope', {}, 'unknown_command'],
      ['room.close', '{not json', 'bad_request'],
      ['room.close', { room: 'no-such-room' }, 'room_not_found'],
      ['room.close', { room: '../x' }, 'bad_request'],
      ['room.close', { room: ROOM, extra: 1 }, 'bad_request'],
      ['participant.remove', { room: ROOM, participant: 'P999999' }, 'participant_not_found'],
      ['track.mute', { room: ROOM }, 'bad_request'],
      ['track.mute', { room: ROOM, track: 'TR999999' }, 'track_not_found'],
    ];
    for (const [name, body, code] of errors) {
      const r = await command(w.nc, name, body);
      assert.equal(r.ok, false, `${name} ${JSON.stringify(body)} -> ${JSON.stringify(r)}`);
      assert.equal(r.error.code, code, `${name} ${JSON.stringify(body)} -> ${JSON.stringify(r)}`);
      assert.equal(typeof r.error.message, 'string');
    }
    assert.equal(bob.socket.connected, true, 'bad commands did not touch the room');

    // room.close: Ann's page and Bob are sent away; the other room stays.
    const closed = await command(w.nc, 'room.close', { room: ROOM, reason: 'exam over' });
    assert.deepEqual([closed.ok, closed.removed], [true, 2]);
    await waitFor(() => bob.inbox.some((m) => m.event === 'roomClosed' && m.data.reason === 'exam over'), { what: 'Bob told the room closed' });
    await waitFor(() => !bob.socket.connected, { what: 'Bob disconnected' });
    await waitFor(() => ann.page.evaluate(() => document.body.dataset.state === 'left'), { what: "Ann's page to leave" });
    assert.match(await ann.page.textContent('#status'), /closed \(exam over\)/);
    const after = await command(w.nc, 'rooms.list', {});
    assert.deepEqual(after.rooms.map((r) => r.room), ['nats-other']);
    assert.equal(dave.socket.connected, true);
  });
});

test('NATS stopped mid-sequence: events wait and arrive in order after the restart', { timeout: 180000 }, async (t) => {
  await withWorld(t, async (w) => {
    const ROOM = 'nats-outage';
    const a = await joinClient(w.server.baseUrl, { room: ROOM, name: 'A' });
    const jsm = await w.nc.jetstreamManager();
    await waitFor(async () => { try { return (await jsm.streams.info(STREAM)).state.messages === 2; } catch { return false; } },
      { what: 'room.started + participant.joined stored' });
    await w.nc.close();
    w.nc = null;
    w.nats.signal('SIGTERM');
    await w.nats.waitForExit(10000);

    // While NATS is down: B joins, A leaves, B leaves (the room ends).
    const b = await joinClient(w.server.baseUrl, { room: ROOM, name: 'B' });
    await ok(a.socket, 'leave', {});
    await ok(b.socket, 'leave', {});
    const metrics = await (await fetch('http://127.0.0.1:9100/metrics')).text();
    assert.match(metrics, /^studyroom_lifecycle_events_pending [1-9]/m, 'events wait while NATS is down');

    w.nats = await startNats({ port: NATS_PORT, storeDir: w.storeDir });
    w.nc = await connect({ servers: w.nats.url });
    const js2 = await w.nc.jetstreamManager();
    let msgs = [];
    await waitFor(async () => {
      const info = await js2.streams.info(STREAM);
      msgs = [];
      for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
        msgs.push((await js2.streams.getMessage(STREAM, { seq })).json());
      }
      return msgs.length >= 6;
    }, { what: 'the events sent while NATS was down', timeoutMs: 60000, progress: () => msgs.map((m) => m.type) });
    assert.deepEqual(msgs.map((m) => [m.type, m.participant?.name ?? null]), [
      ['room.started', null], ['participant.joined', 'A'],
      ['participant.joined', 'B'], ['participant.left', 'A'], ['participant.left', 'B'], ['room.ended', null],
    ]);
    assertEnvelope(msgs.map((data) => ({ subject: `studyroom.room.${ROOM}.${data.type}`, data })), ROOM);
    const pending = await (await fetch('http://127.0.0.1:9100/metrics')).text();
    assert.match(pending, /^studyroom_lifecycle_events_pending 0$/m);
    assert.match(pending, /^studyroom_lifecycle_events_dropped_total 0$/m);
  });
});
