// React: one remote participant's tile (camera video, microphone audio, name), and a room
// view using useStudyRoom. Type-checked in CI (tests/types).
import { useEffect, useRef } from 'react';
import { useStudyRoom, type RemoteMedia } from './useStudyRoom';

function useTrack<T extends HTMLMediaElement>(track: MediaStreamTrack | undefined) {
  const ref = useRef<T>(null);
  useEffect(() => {
    if (ref.current) ref.current.srcObject = track ? new MediaStream([track]) : null;
  }, [track]);
  return ref;
}

export function ParticipantTile({ remote }: { remote: RemoteMedia }) {
  const video = useTrack<HTMLVideoElement>(remote.tracks.camera);
  const audio = useTrack<HTMLAudioElement>(remote.tracks.microphone);
  const muted = remote.participant.tracks.find((t) => t.source === 'microphone')?.muted ?? false;
  return (
    <figure className="tile" aria-label={remote.participant.name}>
      <video ref={video} autoPlay playsInline muted />
      <audio ref={audio} autoPlay />
      <figcaption>{remote.participant.name}{muted ? ' (음소거 / muted)' : ''}</figcaption>
    </figure>
  );
}

export function Room({ token }: { token: string }) {
  const { state, error, remotes } = useStudyRoom(token);
  return (
    <section aria-busy={state === 'connecting'}>
      {error && <p role="alert">{error}</p>}
      {remotes.map((r) => <ParticipantTile key={r.participant.id} remote={r} />)}
    </section>
  );
}
