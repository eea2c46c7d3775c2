// Type declarations for studyroom.js, the browser client of the studyroom protocol
// (docs/protocol.md). Hand-written: the library stays plain JavaScript that the demo page
// loads as it is; tests/types/ type-checks these declarations against the examples with
// `tsc --noEmit`, and tests/e2e/sdk-package.test.js checks that every public method and
// event of studyroom.js is declared here.

/** The protocol revisions this client speaks (docs/protocol.md, "Versions"). */
export declare const PROTOCOL_VERSIONS: readonly number[];

/** Error codes a request or connect may reject with (the server's, plus the client's own). */
export type ErrorCode =
  | 'missing_token' | 'invalid_token' | 'token_expired'
  | 'bad_request' | 'forbidden' | 'not_joined' | 'room_full' | 'rate_limited'
  | 'moved' | 'draining' | 'resume_failed' | 'unknown_track' | 'media_timeout'
  | 'unsupported_codec' | 'already_published' | 'already_connected' | 'not_connected'
  | 'protocol_mismatch' | 'transport' | 'left' | 'internal'
  | 'message_too_long' | 'chat_disabled'
  | (string & {});

/** A failed request: `code` is the server's error code (or the client's, see ErrorCode). */
export declare class StudyRoomError extends Error {
  constructor(code: ErrorCode, message?: string);
  readonly name: 'StudyRoomError';
  readonly code: ErrorCode;
  /** With `moved`: the node the room lives on. */
  url?: string;
}

export type Role = 'learner' | 'proctor';
export type TrackKind = 'audio' | 'video';
export type TrackSource = 'camera' | 'microphone' | 'screen';
export type Quality = 'low' | 'medium' | 'high';
export type PcRole = 'publisher' | 'subscriber';
export type RoomState =
  | 'new' | 'connecting' | 'connected' | 'joined' | 'reconnecting' | 'left' | 'disconnected';
export type LeaveReason =
  | 'left' | 'disconnected' | 'replaced' | 'timeout' | 'removed' | 'room_closed' | 'reconnecting';

/** A published track (docs/protocol.md, "Objects"). */
export interface Track {
  id: string;
  participantId: string;
  kind: TrackKind;
  source: TrackSource;
  muted: boolean;
  /** MIME subtype in lower case: "opus", "vp8", "vp9", "h264", "av1". */
  codec: string;
}

/** A participant of the room. */
export interface Participant {
  id: string;
  /** The token's `sub`. */
  identity: string;
  name: string;
  role: Role;
  /** ms since the epoch. */
  joinedAt: number;
  tracks: Track[];
}

/** A learner's focus change, as proctors see it. */
export interface FocusEvent {
  v: 1;
  room: string;
  participantId: string;
  /** Identity (token `sub`). */
  participant: string;
  name: string;
  state: 'lost' | 'regained';
  /** "hidden", "visible", "blur", "focus", "fullscreen-exit", "fullscreen-enter". */
  reason: string;
  /** Server time, ms since the epoch. */
  at: number;
  client_at: number | null;
  /** On "regained": how long focus was lost (server clock). */
  lost_ms: number | null;
}

/** A chat message (docs/protocol.md, "Chat"). */
export interface ChatMessage {
  id: string;
  room: string;
  from: { id: string; identity: string; name: string; role: Role };
  /** Trimmed and HTML-escaped by the server (`&`, `<`, `>`, `"`, `'`): safe to insert as HTML. */
  text: string;
  /** Server time, ms since the epoch. */
  at: number;
}

/** The `join` ack. */
export interface JoinAck {
  /** The protocol revision the server speaks (2). */
  protocol: number;
  participant: Participant;
  participants: Participant[];
  iceServers: RTCIceServer[];
  resumeToken: string;
  resumeWindowMs: number;
  /** Several-node deployments: the live nodes' signaling URLs, this node first. */
  nodes?: string[];
  /** Proctors: the room's recent focus events, oldest first. */
  focusHistory?: FocusEvent[];
  /** The token's chat grant. */
  chat: boolean;
  /** With chat: the last 100 messages, oldest first. */
  chatHistory?: ChatMessage[];
}

/** What `publish()` resolves with: one entry per local track. */
export interface LocalTrackSummary {
  source: TrackSource;
  /** The server's track id (null until the publish ack). */
  trackId: string | null;
}

/** A local track as the client keeps it (`room.localTracks`). */
export interface LocalTrack {
  source: TrackSource;
  track: MediaStreamTrack;
  stream: MediaStream;
  transceiver: RTCRtpTransceiver | null;
  trackId: string | null;
  muted: boolean;
}

/** A remote track the subscriber PC receives (`room.remoteTracks`). */
export interface RemoteTrack {
  mid: string;
  trackId: string;
  participantId: string;
  kind: TrackKind;
  source: TrackSource;
  track: MediaStreamTrack;
}

export interface ActiveSpeaker {
  /** Participant id. */
  id: string;
  /** 0..1 */
  level: number;
}

export interface ClientError {
  /** Where it happened: "server" for a pushed `error`, else the client step. */
  where: string;
  code: ErrorCode;
  message: string;
}

export interface ReconnectingInfo {
  reason: 'draining' | 'moved' | 'node_lost' | 'media_lost' | (string & {});
  url: string | null;
  deadlineMs: number | null;
  attempt: number;
}

export interface FocusReport {
  state: 'lost' | 'regained';
  reason: string;
  at: number;
  ack: { ok: true; event?: FocusEvent; duplicate?: true; auditId?: string };
}

/** `videoPaused` / `videoResumed`: which remote video, whose, and why. */
export interface VideoPauseInfo {
  trackId: string;
  /** The publishing participant (null if the track is not known to this client yet). */
  participantId: string | null;
  reason: 'bandwidth';
}

/** One layer of a published video and whether it is encoded (dynacast). */
export interface PublisherLayer {
  /** The simulcast RID; null for a video sent without simulcast. */
  rid: string | null;
  active: boolean;
}

/** `publisherLayers`: the server said which layers of one of our videos somebody wants; applied. */
export interface PublisherLayersInfo {
  trackId: string;
  source: TrackSource;
  /** Every encoding of the sender after applying, in its order. */
  layers: PublisherLayer[];
}

/** Every event `room.on()` takes, with its handler's arguments. */
export interface StudyRoomEvents {
  participantJoined: [participant: Participant];
  participantLeft: [info: { id: string; reason: LeaveReason }];
  trackPublished: [track: Track];
  trackUnpublished: [info: { id: string; participantId: string }];
  trackMuted: [info: { id: string; participantId: string; muted: boolean }];
  remoteTrack: [participantId: string, trackId: string, kind: TrackKind, source: TrackSource, track: MediaStreamTrack];
  remoteTrackEnded: [participantId: string, trackId: string];
  activeSpeakers: [speakers: ActiveSpeaker[]];
  /** The server stopped forwarding a remote video: our downlink cannot carry it (server run with `--bwe`). Audio goes on. */
  videoPaused: [info: VideoPauseInfo];
  /** That video flows again. */
  videoResumed: [info: VideoPauseInfo];
  /** Dynacast: layers of one of our videos turned off (nobody needs them) or on again. */
  publisherLayers: [info: PublisherLayersInfo];
  localTrack: [source: TrackSource, track: MediaStreamTrack];
  localTrackEnded: [source: TrackSource];
  localMuted: [source: TrackSource, muted: boolean];
  connectionState: [which: PcRole, state: RTCPeerConnectionState];
  iceRestart: [info: { target: PcRole; reason: string; attempt: number }];
  error: [err: ClientError];
  disconnected: [reason: string];
  left: [];
  roomClosed: [info: { room: string; reason: string }];
  removed: [info: { room: string; reason: string }];
  resuming: [info: { reason: string }];
  resumed: [info: { participant: Participant }];
  reconnecting: [info: ReconnectingInfo];
  migrated: [info: { url: string; participant: Participant }];
  focus: [event: FocusEvent];
  focusHistory: [events: FocusEvent[]];
  focusReported: [report: FocusReport];
  message: [message: ChatMessage];
  chatHistory: [messages: ChatMessage[]];
}

export type StudyRoomEventName = keyof StudyRoomEvents;

export interface StudyRoomOptions {
  /** Server base URL (default: the page's origin). */
  url?: string;
  /** Force the camera's codec: "VP8", "VP9", "H264", "AV1" (case-insensitive). */
  videoCodec?: string;
  /** Send the camera as three simulcast layers. */
  simulcast?: boolean;
  /**
   * Adaptive stream (default true): report each remote video's displayed size and
   * visibility (`trackView`) so the server sends no more than the <video> elements show
   * and nothing of hidden ones. False: every remote video arrives as `setQuality` asks.
   */
  adaptiveStream?: boolean;
  /** Ask for Opus DTX: the microphone sends (almost) nothing during silence. */
  dtx?: boolean;
}

export interface PublishOptions {
  camera?: boolean;
  microphone?: boolean;
  /** Publish this stream instead of calling getUserMedia. */
  stream?: MediaStream | null;
}

/** One client in one room. Lifecycle: new -> connect(token) -> join() -> publish() -> ... -> leave(). */
export declare class StudyRoom {
  /** The protocol revisions this client accepts. */
  static readonly protocols: readonly number[];
  constructor(opts?: StudyRoomOptions);

  /** The node this client talks to now (changes on a move). */
  url: string;
  readonly videoCodec: string | null;
  readonly simulcast: boolean;
  /** Whether adaptive stream is on (the `adaptiveStream` option). */
  readonly adaptiveStream: boolean;
  /** Whether Opus DTX is asked for (the `dtx` option). */
  readonly dtx: boolean;
  readonly state: RoomState;
  /** Our own participant, once joined. */
  readonly participant: Participant | null;
  /** The others, by id. */
  readonly participants: Map<string, Participant>;
  readonly iceServers: RTCIceServer[];
  readonly localTracks: Map<TrackSource, LocalTrack>;
  readonly remoteTracks: Map<string, RemoteTrack>;
  readonly publisherPc: RTCPeerConnection | null;
  readonly subscriberPc: RTCPeerConnection | null;
  /** The token's chat grant (false: chat is off for us). */
  readonly chat: boolean;
  /** Live nodes' URLs from the last join ack. */
  readonly nodes: string[];
  /** Recent events as plain data (debugging, tests). */
  readonly eventLog: Array<{ event: StudyRoomEventName; at: number; data: unknown[] }>;

  /** Subscribe; returns the unsubscribe function. */
  on<E extends StudyRoomEventName>(event: E, fn: (...args: StudyRoomEvents[E]) => void): () => void;
  off<E extends StudyRoomEventName>(event: E, fn: (...args: StudyRoomEvents[E]) => void): void;

  /** Opens the Socket.IO connection; rejects with the handshake error code. */
  connect(token: string): Promise<void>;
  /** Joins the room named in the token. */
  join(): Promise<JoinAck>;
  /** Publishes camera and/or microphone. */
  publish(opts?: PublishOptions): Promise<LocalTrackSummary[]>;
  /** Which simulcast layer to receive of a participant's video source. */
  setQuality(participantId: string, source: 'camera' | 'screen', quality: Quality): Promise<void>;
  /** Mutes or unmutes one of our tracks, by server track id or by source. */
  setMuted(trackIdOrSource: string, muted: boolean): Promise<void>;
  startScreenShare(): Promise<void>;
  stopScreenShare(): Promise<void>;
  /** Proctors: the room's recent focus events, or one participant's. */
  focusHistory(participantId?: string): Promise<FocusEvent[]>;
  /** Sends a chat message; resolves with it as the room sees it. */
  sendMessage(text: string): Promise<ChatMessage>;
  /** The room's chat history, oldest first. */
  chatHistory(): Promise<ChatMessage[]>;
  /** Restarts ICE on both peer connections now. */
  restartIce(reason?: string): Promise<unknown[]>;
  /** Leaves the room and closes everything. */
  leave(): Promise<void>;
}
