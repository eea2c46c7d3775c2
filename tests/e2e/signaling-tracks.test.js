// Publishing over signaling without a browser, against a real `studyroom --dev`
// (docs/protocol.md): a hand-written offer gets an ICE-lite answer and Track objects, the
// room hears trackPublished / trackMuted / trackUnpublished, subscribers get `offer` events
// mapping mids to tracks, and the next offer waits for the answer to the previous one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { answerFor, handOffer, HAND_TRACKS, sections } from './lib/hand-sdp.js';
import { assertError, harness, received, request, until } from './lib/signaling-harness.js';

const h = harness();

function assertTrack(t, want) {
  assert.equal(typeof t?.id, 'string', `track without id: ${JSON.stringify(t)}`);
  assert.ok(['audio', 'video'].includes(t.kind) && typeof t.codec === 'string' && t.codec.length > 0,
    `track kind/codec: ${JSON.stringify(t)}`);
  for (const [k, v] of Object.entries(want)) assert.deepEqual(t[k], v, `track.${k} in ${JSON.stringify(t)}`);
}

/**
 * Answers a subscriber's offers in order, as a browser would, until one satisfies `pred`;
 * returns that one (unanswered) and its index. The server offers one change at a time.
 */
async function answerOffersUntil(socket, pred, what, from = 0) {
  for (let i = from; ; i++) {
    const offer = await until(() => received(socket, 'offer')[i], `offer #${i + 1} (${what})`);
    if (pred(offer)) return { offer, index: i };
    assert.deepEqual(await request(socket, 'answer', { sdp: answerFor(offer.sdp) }), { ok: true }, `answer to offer #${i + 1}`);
  }
}
const maps = (offer, trackId) => offer.tracks.some((x) => x.trackId === trackId);

test('publish: an ICE-lite answer, Track objects, trackPublished and an offer to the others', async () => {
  const room = 'publish-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const idA = a.ack.participant.id;

  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  assert.match(pub.sdp, /^v=0\r?\n/);
  assert.match(pub.sdp, /^a=ice-lite/m, 'the answer is not ICE-lite');
  assert.match(pub.sdp, /^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 40\d\d\d typ host/im, 'no UDP host candidate on 127.0.0.1:40000-40100');
  assert.match(pub.sdp, /^a=setup:(active|passive)$/m);
  const answered = sections(pub.sdp);
  assert.deepEqual(answered.map((m) => m.find((l) => l.startsWith('a=mid:'))), ['a=mid:0', 'a=mid:1']);
  for (const m of answered) assert.ok(m.includes('a=recvonly'), `answer m-line is not recvonly: ${m.join(' | ')}`);
  assert.equal(pub.tracks.length, 2, JSON.stringify(pub.tracks));
  const audio = pub.tracks.find((t) => t.kind === 'audio');
  const video = pub.tracks.find((t) => t.kind === 'video');
  assertTrack(audio, { participantId: idA, source: 'microphone', muted: false });
  assertTrack(video, { participantId: idA, source: 'camera', muted: false });
  assert.equal(audio.codec, 'opus');
  assert.equal(video.codec, 'vp8');

  for (const t of pub.tracks) {
    const seen = await until(() => received(b.socket, 'trackPublished').find((x) => x.id === t.id), `trackPublished(${t.kind}) at B`);
    assert.deepEqual(seen, t);
  }
  const { offer } = await answerOffersUntil(b.socket, (o) => pub.tracks.every((t) => maps(o, t.id)), 'both tracks at B');
  assert.match(offer.sdp, /^a=ice-lite/m);
  for (const t of pub.tracks) {
    const m = offer.tracks.find((x) => x.trackId === t.id);
    assert.ok(m, `offer maps no mid to ${t.id}: ${JSON.stringify(offer.tracks)}`);
    assert.deepEqual({ participantId: m.participantId, kind: m.kind, source: m.source },
      { participantId: idA, kind: t.kind, source: t.source });
    const section = sections(offer.sdp).find((s) => s.includes(`a=mid:${m.mid}`));
    assert.ok(section?.[0].startsWith(`m=${t.kind} `), `mid ${m.mid} is not an ${t.kind} m-line in the offer`);
  }
  assert.ok(!received(a.socket, 'offer').some((o) => o.tracks?.some((x) => x.participantId === idA)),
    'A was offered its own tracks');

  const c = await h.joined({ room, name: 'Cy', role: 'learner' });
  const listed = c.ack.participants.find((p) => p.id === idA);
  assert.deepEqual(listed?.tracks?.map((t) => t.id).sort(), pub.tracks.map((t) => t.id).sort(), 'late joiner sees A without its tracks');
});

test('mute, trickle, unpublish; a new offer waits for the answer to the previous one', async () => {
  const room = 'mute-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const idA = a.ack.participant.id;
  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  const audio = pub.tracks.find((t) => t.kind === 'audio');
  const video = pub.tracks.find((t) => t.kind === 'video');
  // Bring B's subscriber PC up to date: both tracks offered and answered.
  const both = await answerOffersUntil(b.socket, (o) => maps(o, audio.id) && maps(o, video.id), 'both tracks at B');
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(both.offer.sdp) }), { ok: true });

  for (const muted of [true, false]) {
    assert.deepEqual(await request(a.socket, 'mute', { trackId: audio.id, muted }), { ok: true });
    await until(() => received(b.socket, 'trackMuted').find((x) => x.id === audio.id && x.muted === muted), `trackMuted(${muted}) at B`);
  }
  assert.deepEqual(received(b.socket, 'trackMuted').map((x) => x.participantId), [idA, idA]);

  const candidate = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
  assert.deepEqual(await request(a.socket, 'ice', { target: 'publisher', candidate }), { ok: true });
  assert.deepEqual(await request(a.socket, 'ice', { target: 'publisher', candidate: null }), { ok: true });

  assert.deepEqual(await request(a.socket, 'unpublish', { trackId: video.id }), { ok: true });
  const gone = await until(() => received(b.socket, 'trackUnpublished').find((x) => x.id === video.id), 'trackUnpublished at B');
  assert.deepEqual(gone, { id: video.id, participantId: idA });
  assertError(await request(a.socket, 'mute', { trackId: video.id, muted: true }), 'unknown_track', 'mute of an unpublished track');

  // C publishes: B gets an offer for C's tracks and leaves it unanswered for now.
  const c = await h.joined({ room, name: 'Cy', role: 'learner' });
  const pubC = await request(c.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pubC.error, `publish by C failed: ${JSON.stringify(pubC)}`);
  const forC = await answerOffersUntil(b.socket, (o) => o.tracks.some((x) => x.participantId === c.ack.participant.id), "C's tracks at B", both.index + 1);
  // D publishes while that offer is pending: B hears trackPublished, but no offer until it answers.
  const d = await h.joined({ room, name: 'Di', role: 'learner' });
  const pubD = await request(d.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pubD.error, `publish by D failed: ${JSON.stringify(pubD)}`);
  for (const t of pubD.tracks) await until(() => received(b.socket, 'trackPublished').find((x) => x.id === t.id), 'trackPublished(D) at B');
  assert.equal(received(b.socket, 'offer').length, forC.index + 1, 'a new offer came before the previous one was answered');
  assertError(await request(b.socket, 'answer', { sdp: 'this is no answer' }), 'bad_sdp', 'garbage answer to a pending offer');
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(forC.offer.sdp) }), { ok: true });
  const forD = await until(() => received(b.socket, 'offer')[forC.index + 1], 'the next offer once B answered');
  assert.ok(pubD.tracks.every((t) => maps(forD, t.id)), `offer after the answer misses D's tracks: ${JSON.stringify(forD.tracks)}`);
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(forD.sdp) }), { ok: true });
  assertError(await request(b.socket, 'answer', { sdp: answerFor(forD.sdp) }), 'no_offer_pending', 'answering twice');
});

test('a track published again after an unpublish reuses the subscriber\'s m-line (no renegotiation)', async () => {
  const room = 'republish-room';
  const a = await h.joined({ room, name: 'Ada', role: 'learner' });
  const b = await h.joined({ room, name: 'Bob', role: 'learner' });
  const pub = await request(a.socket, 'publish', { sdp: handOffer(), tracks: HAND_TRACKS });
  assert.ok(!pub.error, `publish failed: ${JSON.stringify(pub)}`);
  const video = pub.tracks.find((t) => t.kind === 'video');
  const both = await answerOffersUntil(b.socket, (o) => pub.tracks.every((t) => maps(o, t.id)), 'both tracks at B');
  assert.deepEqual(await request(b.socket, 'answer', { sdp: answerFor(both.offer.sdp) }), { ok: true });
  const slot = both.offer.tracks.find((t) => t.trackId === video.id);
  assert.equal(slot.participantId, a.ack.participant.id);
  assert.equal(slot.source, 'camera');

  assert.deepEqual(await request(a.socket, 'unpublish', { trackId: video.id }), { ok: true });
  await until(() => received(b.socket, 'trackUnpublished').find((x) => x.id === video.id), 'trackUnpublished at B');
  const offersBefore = received(b.socket, 'offer').length;
  const again = await request(a.socket, 'publish', { sdp: handOffer({ version: 3 }), tracks: HAND_TRACKS });
  assert.ok(!again.error, `re-publish failed: ${JSON.stringify(again)}`);
  const video2 = again.tracks.find((t) => t.kind === 'video');
  assert.ok(video2 && video2.id !== video.id, `re-published video: ${JSON.stringify(again.tracks)}`);
  // B learns the new track id with the same (participantId, source): the m-line it already
  // has for Ada's camera carries it, continuously (docs/protocol.md, "offer").
  const tp = await until(() => received(b.socket, 'trackPublished').find((x) => x.id === video2.id), 'trackPublished(new video) at B');
  assert.equal(tp.participantId, slot.participantId);
  assert.equal(tp.source, slot.source);
  // A round trip on B's socket, then: no new offer was needed.
  assert.ok(!(await request(b.socket, 'mute', { trackId: 'TR999999', muted: true })).ok);
  assert.equal(received(b.socket, 'offer').length, offersBefore, 'no renegotiation for a re-publish of the same source');
});
