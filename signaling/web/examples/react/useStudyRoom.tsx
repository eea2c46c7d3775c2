// React: a hook that owns one StudyRoom for a component's life and exposes what a page
// draws (participants, their media, our state). Type-checked in CI (tests/types).
import { useEffect, useRef, useState } from 'react';
import { StudyRoom, type Participant, type RoomState, type TrackSource } from '@studyroom/client';

export interface RemoteMedia {
  participant: Participant;
  /** By source: the MediaStreamTrack received. */
  tracks: Partial<Record<TrackSource, MediaStreamTrack>>;
}

export interface UseStudyRoom {
  room: StudyRoom | null;
  state: RoomState;
  error: string | null;
  remotes: RemoteMedia[];
}

export function useStudyRoom(token: string | null, url?: string): UseStudyRoom {
  const roomRef = useRef<StudyRoom | null>(null);
  const [state, setState] = useState<RoomState>('new');
  const [error, setError] = useState<string | null>(null);
  const [remotes, setRemotes] = useState<Map<string, RemoteMedia>>(new Map());

  useEffect(() => {
    if (!token) return undefined;
    const room = new StudyRoom({ url });
    roomRef.current = room;
    const update = (id: string, f: (r: RemoteMedia | undefined) => RemoteMedia | undefined) =>
      setRemotes((prev) => {
        const next = new Map(prev);
        const v = f(prev.get(id));
        if (v) next.set(id, v); else next.delete(id);
        return next;
      });
    const offs = [
      room.on('participantJoined', (p) => update(p.id, (r) => ({ participant: p, tracks: r?.tracks ?? {} }))),
      room.on('participantLeft', ({ id }) => update(id, () => undefined)),
      room.on('remoteTrack', (pid, _tid, _kind, source, track) =>
        update(pid, (r) => (r ? { ...r, tracks: { ...r.tracks, [source]: track } } : r))),
      room.on('remoteTrackEnded', (pid, tid) => update(pid, (r) => {
        if (!r) return r;
        const ended = room.remoteTracks.get(tid)?.source;
        const tracks = { ...r.tracks };
        if (ended) delete tracks[ended];
        return { ...r, tracks };
      })),
      room.on('left', () => setState('left')),
      room.on('disconnected', () => setState('disconnected')),
      room.on('error', (e) => setError(`${e.code}: ${e.message}`)),
    ];
    (async () => {
      setState('connecting');
      await room.connect(token);
      await room.join();
      setState(room.state);
      await room.publish();
    })().catch((e: unknown) => setError(e instanceof Error ? e.message : String(e)));
    return () => {
      for (const off of offs) off();
      void room.leave();
      roomRef.current = null;
    };
  }, [token, url]);

  return { room: roomRef.current, state, error, remotes: [...remotes.values()] };
}
