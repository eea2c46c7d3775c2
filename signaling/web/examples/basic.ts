// A typed use of the client: join, publish, show who is there. Type-checked in CI
// (tests/types, `tsc --noEmit`); not built into the server.
import { StudyRoom, StudyRoomError, type Participant, type Track } from '@studyroom/client';

export async function joinExam(token: string, log: (line: string) => void): Promise<StudyRoom> {
  const room = new StudyRoom({ url: 'https://rooms.example.com', simulcast: true, adaptiveStream: true });
  const others = new Map<string, Participant>();
  room.on('participantJoined', (p) => { others.set(p.id, p); log(`${p.name} joined`); });
  room.on('participantLeft', ({ id, reason }) => { others.delete(id); log(`${id} left (${reason})`); });
  room.on('trackPublished', (t: Track) => log(`${t.participantId} publishes ${t.source} (${t.codec})`));
  room.on('remoteTrack', (pid, _trackId, kind, source, track) => log(`${kind}/${source} of ${pid}: ${track.id}`));
  room.on('error', (e) => log(`error ${e.code} at ${e.where}: ${e.message}`));
  room.on('publisherLayers', ({ source, layers }) =>
    log(`${source} encodes ${layers.filter((l) => l.active).map((l) => l.rid ?? 'all').join(',') || 'nothing'} (adaptive: ${room.adaptiveStream})`));
  try {
    await room.connect(token);
    const ack = await room.join();
    log(`joined as ${ack.participant.id} (protocol ${ack.protocol}), ${ack.participants.length} here`);
    const published = await room.publish({ camera: true, microphone: true });
    for (const t of published) log(`sending ${t.source} as ${t.trackId ?? '(pending)'}`);
    await room.setMuted('microphone', true);
    room.on('message', (m) => log(`${m.from.name}: ${m.text}`));
    if (room.chat) await room.sendMessage('안녕하세요 / Hello');
  } catch (e) {
    if (e instanceof StudyRoomError && e.code === 'protocol_mismatch') log('update the client');
    throw e;
  }
  return room;
}
