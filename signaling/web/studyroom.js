// studyroom.js — the browser client library for a studyroom room (ES module).
//
// Why it exists: it holds the whole client side of docs/protocol.md in one place so that
// the demo page (app.js) only draws the UI and tests can drive a real client through
// `window.studyroom`. It speaks Socket.IO through our own sio.js and keeps two peer
// connections, as the protocol asks:
//   - publisher PC: we offer (`publish`) with sendonly transceivers (camera, mic, later a
//     screen share as another mid), the server answers;
//   - subscriber PC: the server pushes `offer` events with a mid -> track mapping, we
//     answer (`answer`); offers are applied strictly one at a time.
// Local ICE candidates are trickled with `ice`, after the description they belong to was
// acknowledged.
//
// Why one file (~1 100 lines): StudyRoom is one state machine. Session, resume, node moves,
// ICE restarts and both peer connections read and reset the same fields (socket, epoch,
// pcs, queued candidates), so its parts would not stand alone as modules. What does stand
// alone lives apart: the Socket.IO wire format (sio.js) and the UI (app.js).
//
// Options: `new StudyRoom({ url, videoCodec })`; `videoCodec` ('VP8' | 'VP9' | 'H264' | 'AV1',
// case-insensitive; default: the browser's own order) restricts the camera's m-line to that
// codec (plus rtx/red/fec) with RTCRtpTransceiver.setCodecPreferences, so the server must
// take it; publish() rejects with `unsupported_codec` if the browser cannot send it.
// `dtx: true` asks for Opus DTX (no packets during silence, for weak uplinks): the offer
// sent to the server carries `usedtx=1` on Opus, the server's answer mirrors it, and the
// browser's encoder follows the answer (docs/protocol.md, "Audio options").
//
// Lifecycle: new StudyRoom() -> connect(token) -> join() -> publish() (optional)
//   -> setMuted / startScreenShare / stopScreenShare ... -> leave().
// Draining nodes: when the server pushes `reconnect` ({reason, url, deadlineMs}) we migrate:
// close both PCs, connect to `url` (or our current URL when null) with the same token, join,
// publish the same local tracks again (same sources, same mute state) and carry on. A
// `join` refused with `draining` or `server_full` is retried a bounded number of times on a
// fresh socket (behind a load balancer, likely another node).
// The participant gets a new id on the new node; others are announced again from its join.
// Several nodes (docs/protocol.md, "Several nodes"): a `join` refused with `moved` {url} is
// repeated on that node (where the room lives). The join ack's `nodes` lists the live
// nodes' URLs: when the socket drops (the node died) while joined, we move the same way,
// trying the other nodes first, then ours again; the node that takes us re-homes the room.
// A node that stops answering without closing the socket (frozen, or its machine gone) is
// noticed by ICE instead: a peer connection whose ICE restart the server does not answer
// within ICE_RESTART_ACK_MS starts the same move.
// ICE restart: a peer connection disconnected for ICE_RESTART_AFTER_MS, or failed, restarts
// ICE (publisher: an offer with new credentials through `publish`; subscriber: `restartIce`,
// the server's next offer has new credentials) and retries while not connected. Nothing else
// changes: same participant, tracks, m-lines. Event iceRestart({target, reason, attempt}).
// Resume (docs/protocol.md, "Resuming a session"): the join ack carries a single-use
// `resumeToken`. When the socket drops under a joined session (not for leave, removed,
// roomClosed, a server-side disconnect or a `reconnect` move), we connect to the same URL
// with the same token and send `resume`: the server kept our participant, so both peer
// connections, tracks and state stay as they are, the page sees only resuming({reason}) and
// resumed({participant}), and the pushes we missed arrive after the ack; then ICE restarts
// on both PCs (_afterResume). If the node cannot be reached in time (with several nodes:
// RESUME_FAILOVER_MS, else until the resume window ends) we do what a drop did before
// (move to another node, or `disconnected`); if it refuses (`resume_failed`) we join afresh.
// Events (room.on(name, fn)): participantJoined(p), participantLeft({id, reason}),
//   trackPublished(track), trackUnpublished({id, participantId}),
//   trackMuted({id, participantId, muted}), videoPaused({trackId, participantId, reason}) /
//   videoResumed({trackId, participantId, reason}) when the server stops / restarts one
//   remote video because our downlink cannot carry it (reason "bandwidth"; audio goes on),
//   remoteTrack(participantId, trackId, kind, source,
//   MediaStreamTrack), remoteTrackEnded(participantId, trackId), activeSpeakers(speakers),
//   localTrack(source, MediaStreamTrack), localTrackEnded(source), localMuted(source, muted),
//   connectionState(which, state), error(err), disconnected(reason), left(),
//   roomClosed({room, reason}) / removed({room, reason}) when the platform closed the room or
//   removed us (followed by left(); no rejoin),
//   resuming({reason}) when the socket dropped and we resume, resumed({participant}) when
//   the same participant continues on a new socket (see Resume above),
//   reconnecting({reason, url, deadlineMs, attempt}) when a move to another node starts (the
//   old node's participants are first announced gone with participantLeft reason
//   'reconnecting'), migrated({url, participant}) when joined and published there again.
// Proctoring (docs/protocol.md, "Proctors"): a page joined as a *learner* reports its focus
//   changes with `focus` {state, reason, at}: the tab hidden -> 'lost' 'hidden', shown again
//   -> 'regained' 'visible'; the window blurred -> 'lost' 'blur', focused -> 'regained'
//   'focus'; leaving fullscreen -> 'lost' 'fullscreen-exit', entering it -> 'regained'
//   'fullscreen-enter'. A tab switch blurs and hides, a return shows and focuses (in either
//   order, a few ms apart): within FOCUS_SETTLE_MS they are one change, reported as
//   'hidden' / 'visible'; a blur undone at once reports nothing. 'regained' needs the page
//   visible and focused, and the same state is never sent twice in a row (the server
//   dedupes too). Each acknowledged report is emitted as focusReported({state, reason, at, ack}).
//   A *proctor* gets focus(FocusEvent) for every learner's change, focusHistory([FocusEvent])
//   from its join ack (the room's recent history, oldest first), and can ask
//   room.focusHistory(participantId?) -> [FocusEvent].
// Chat (docs/protocol.md, "Chat"): room.sendMessage(text) -> ChatMessage; every message of
//   the room, ours included (from its ack), is emitted as message(ChatMessage) (`text` is
//   HTML-escaped by the server: safe to insert as HTML). The join ack's history is emitted as
//   chatHistory([ChatMessage]) (again after a move: de-duplicate by `id`); room.chatHistory()
//   asks for it. `room.chat` is false when the token's grant turned chat off.
// Adaptive stream (docs/protocol.md, "Adaptive stream and dynacast"; on unless
//   `new StudyRoom({adaptiveStream: false})`): every VIEW_POLL_MS we look for the <video>
//   elements showing each remote video track (srcObject holding it) and report with
//   `trackView` its size (the largest element, clientWidth/Height x devicePixelRatio) and
//   whether anyone sees it (tab visible, element attached, non-zero size, on screen by an
//   IntersectionObserver). Only changes are sent, batched: a change is sent once it held
//   for one poll (a resize or scroll in progress is not reported at every step), a video
//   becoming visible at once. A track never shown in a <video> element is not reported
//   (the server then sends it in full). The server sends at most the layer the element
//   needs and nothing of a hidden video (no videoPaused for it: we hid it).
// Dynacast: the server's `publisherLayers` {trackId, layers: [{rid, active}]} says which
//   layers of one of our videos somebody wants; we turn the others off with
//   RTCRtpSender.setParameters (encodings[i].active) and back on when told, and emit
//   publisherLayers({trackId, source, layers}).
// Every failed request rejects with a StudyRoomError carrying the server's error `code`.
// Versions (docs/protocol.md, "Versions"): the join and resume acks name the protocol
// revision the server speaks; a server speaking none of `StudyRoom.protocols` is left at
// once and join() rejects with `protocol_mismatch` (an ack without `protocol` is revision 1).

import { sioConnect } from './sio.js';

const REQUEST_TIMEOUT_MS = 10000;
const EVENT_LOG_MAX = 500;
// A join refused with `draining` (or joined on a node that announced `reconnect` meanwhile)
// is retried on a fresh socket this many times, RETRY_BASE_MS * attempt apart (+ jitter).
const JOIN_ATTEMPTS = 6;
const CONNECT_ATTEMPTS = 5;
const RETRY_BASE_MS = 250;
const RETRY_JITTER_MS = 250;
// Handshake refusals that another attempt cannot fix.
const FATAL_CONNECT_CODES = new Set(['missing_token', 'invalid_token', 'token_expired']);
// Focus and visibility changes this close together are one change (see the header).
const FOCUS_SETTLE_MS = 150;
// Several nodes: a peer connection disconnected or failed this long means our node is lost.
// ICE restart: after this long `disconnected` (or at once on `failed`); again every
// ICE_RETRY_MS while not connected; a server silent for ICE_RESTART_ACK_MS is taken as gone.
const ICE_RESTART_AFTER_MS = 1000;
const ICE_RETRY_MS = 3000;
const ICE_RESTART_ACK_MS = 2500;
// Resume: how long we try to reach our node again after the socket dropped. With other nodes
// to move to, briefly (a dead node must not delay the move); alone, until the server's resume
// window is nearly over. Each attempt's connect gives up after RESUME_CONNECT_TIMEOUT_MS.
const RESUME_FAILOVER_MS = 1000;
const RESUME_MARGIN_MS = 1000;
const RESUME_CONNECT_TIMEOUT_MS = 3000;
// Adaptive stream: how often remote videos' elements are looked at (see the header).
const VIEW_POLL_MS = 250;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const retryDelay = (attempt) => RETRY_BASE_MS * attempt + Math.floor(Math.random() * RETRY_JITTER_MS);

// The `url` of a `reconnect` push as a base URL we can connect to, or null (stay where we are).
function redirectUrl(url) {
  if (typeof url !== 'string' || url === '') return null;
  try {
    const u = new URL(url, globalThis.location && globalThis.location.href);
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) return null;
    return `${u.protocol}//${u.host}`;
  } catch {
    return null;
  }
}

// The protocol revisions this client speaks (docs/protocol.md, "Versions").
export const PROTOCOL_VERSIONS = Object.freeze([2]);

export class StudyRoomError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'StudyRoomError';
    this.code = code;
  }
}

// `sdp` with `usedtx=1` on every Opus payload type's fmtp (added when missing). Only the
// copy sent to the server changes: the browser takes DTX from the server's answer.
function offerWithDtx(sdp) {
  const lines = sdp.split('\r\n');
  const opus = new Set(lines.map((l) => /^a=rtpmap:(\d+) opus\//i.exec(l)).filter(Boolean).map((m) => m[1]));
  const withFmtp = new Set();
  const out = lines.map((l) => {
    const m = /^a=fmtp:(\d+) (.*)$/.exec(l);
    if (!m || !opus.has(m[1])) return l;
    withFmtp.add(m[1]);
    return /(^|;)\s*usedtx=1/.test(m[2]) ? l : `${l};usedtx=1`;
  });
  return out.flatMap((l) => {
    const m = /^a=rtpmap:(\d+) opus\//i.exec(l);
    return m && !withFmtp.has(m[1]) ? [l, `a=fmtp:${m[1]} usedtx=1`] : [l];
  }).join('\r\n');
}

// Codecs that only protect or repair the main one; kept when a video codec is forced.
const REPAIR_CODECS = new Set(['video/rtx', 'video/red', 'video/ulpfec', 'video/flexfec-03']);

// Codec preferences that allow only `codec` (e.g. 'VP9'): all its profiles, then the repair
// codecs. Throws `unsupported_codec` if this browser cannot send it.
function videoCodecPreferences(codec) {
  const mime = `video/${String(codec)}`.toLowerCase();
  const caps = (globalThis.RTCRtpSender.getCapabilities('video') || { codecs: [] }).codecs;
  const wanted = caps.filter((c) => c.mimeType.toLowerCase() === mime);
  if (wanted.length === 0) {
    const known = [...new Set(caps.filter((c) => !REPAIR_CODECS.has(c.mimeType.toLowerCase()))
      .map((c) => c.mimeType.slice('video/'.length)))];
    throw new StudyRoomError('unsupported_codec', `this browser cannot send ${codec} (it can: ${known.join(', ')})`);
  }
  const repair = caps.filter((c) => REPAIR_CODECS.has(c.mimeType.toLowerCase()));
  return [...wanted, ...repair];
}

export class StudyRoom {
  /** The protocol revisions this client accepts from a server (docs/protocol.md, "Versions"). */
  static protocols = PROTOCOL_VERSIONS;

  /**
   * @param {{url?: string, videoCodec?: string, simulcast?: boolean, adaptiveStream?: boolean, dtx?: boolean}} opts
   *   `url`: server base URL (defaults to the page's origin); `videoCodec`: force the camera's
   *   codec (see the header); `simulcast`: send the camera as three layers (q, h, f) so each
   *   subscriber can get the one it asks for with setQuality(); `adaptiveStream` (default
   *   true): report remote videos' displayed size and visibility (see the header); `dtx`:
   *   Opus DTX (see the header).
   */
  constructor({ url, videoCodec, simulcast = false, adaptiveStream = true, dtx = false } = {}) {
    this.url = url || globalThis.location.origin; // the node we talk to now (changes on a move)
    this.videoCodec = videoCodec || null;
    this.simulcast = !!simulcast;
    this.dtx = !!dtx;
    this.adaptiveStream = adaptiveStream !== false;
    this._views = new Map(); // remote video trackId -> { sent, pending, shown } (adaptive stream)
    this._viewTimer = null;
    this._viewObserver = null; // IntersectionObserver of the elements showing remote videos
    this._onScreen = new WeakMap(); // element -> intersecting (from the observer)
    // new | connecting | connected | joined | reconnecting | left | disconnected
    this.state = 'new';
    this.socket = null;
    this.participant = null; // our own Participant once joined
    this.participants = new Map(); // the others: id -> Participant
    this.iceServers = [];
    this.localTracks = new Map(); // source -> { source, track, stream, transceiver, trackId, muted }
    this.remoteByMid = new Map(); // mid -> { mid, trackId, participantId, kind, source } (last offer)
    this.remoteTracks = new Map(); // trackId -> { ...mapping, track }
    this.publisherPc = null;
    this.subscriberPc = null;
    this.eventLog = []; // recent events as plain data, for debugging and tests
    this._handlers = new Map();
    this._token = null;
    // Per socket (reset by _openSocket): work that belongs to an older socket is dropped.
    this._epoch = 0;
    this._redirect = null; // the current socket's last `reconnect` push
    this._pubChain = Promise.resolve();
    this._subChain = Promise.resolve();
    this._pending = { publisher: [], subscriber: [] }; // candidates waiting for their description's ack
    this._ready = { publisher: false, subscriber: false };
    this._joined = new Promise((resolve) => { this._resolveJoined = resolve; });
    this._migrating = null; // the move to another node in progress, if any
    this._focusWatch = null; // learners: AbortController of the page focus listeners
    this._focusSent = 'regained'; // the last focus state sent (a new participant starts focused)
    this.nodes = []; // live nodes' URLs from the last join ack (several-node deployments)
    this._iceWatch = {}; // which -> { timer, running, attempts } (ICE restart, see _watchIce)
    this._resume = { token: null, windowMs: 0 }; // from the last join/resume ack
    this.chat = true; // the token's chat grant, from the join ack
  }

  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this._handlers.get(event);
    if (set) set.delete(fn);
  }

  _emit(event, ...args) {
    this.eventLog.push({ event, at: Date.now(), data: args.filter((a) => !(a instanceof MediaStreamTrack)) });
    if (this.eventLog.length > EVENT_LOG_MAX) this.eventLog.shift();
    const set = this._handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (e) { console.error(`studyroom: ${event} handler threw`, e); }
    }
  }

  _fail(where, err) {
    const e = err instanceof Error ? err : new Error(String(err));
    console.error(`studyroom: ${where}:`, e);
    this._emit('error', { where, code: e.code || 'client', message: e.message });
  }

  async _request(event, payload, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.socket) throw new StudyRoomError('not_connected', `${event} before connect()`);
    let res;
    try {
      res = await this.socket.emitWithAck(event, payload, timeoutMs);
    } catch (e) {
      throw new StudyRoomError('transport', `${event}: ${e.message}`);
    }
    if (res && typeof res === 'object' && res.error) {
      const err = new StudyRoomError(res.error.code || 'unknown', res.error.message || '');
      if (typeof res.error.url === 'string') err.url = res.error.url;
      throw err;
    }
    return res;
  }

  /** Opens the Socket.IO connection; rejects with the handshake error code (e.g. invalid_token). */
  connect(token) {
    if (this.socket) return Promise.reject(new StudyRoomError('already_connected', 'connect() called twice'));
    this._token = token;
    this.state = 'connecting';
    return this._openSocket(this.url).then(
      () => { this.state = 'connected'; },
      (e) => { this.state = 'disconnected'; throw e; },
    );
  }

  // A new socket to `url` with our token; everything tied to the previous socket is reset
  // (`keepSession`, for a resume: the peer connections' negotiation state is kept).
  // Resolves once the namespace is connected.
  _openSocket(url, { keepSession = false } = {}) {
    const s = sioConnect(url, '/study', { token: this._token });
    this.socket = s;
    this._epoch += 1;
    this._redirect = null;
    if (!keepSession) {
      this._ready = { publisher: false, subscriber: false };
      this._pending = { publisher: [], subscriber: [] };
      this._pubChain = Promise.resolve();
      this._subChain = Promise.resolve();
    }
    this._joined = new Promise((resolve) => { this._resolveJoined = resolve; });
    // Pushes from a socket we already left behind are ignored.
    const on = (event, fn) => s.on(event, (...args) => { if (this.socket === s) fn(...args); });
    on('participantJoined', (p) => this._onParticipantJoined(p));
    on('participantLeft', (m) => this._onParticipantLeft(m));
    on('trackPublished', (t) => this._onTrackPublished(t));
    on('trackUnpublished', (m) => this._onTrackUnpublished(m));
    on('trackMuted', (m) => this._onTrackMuted(m));
    on('activeSpeakers', (m) => this._emit('activeSpeakers', (m && m.speakers) || []));
    on('videoPaused', (m) => { const i = this._videoPauseInfo(m); if (i) this._emit('videoPaused', i); });
    on('videoResumed', (m) => { const i = this._videoPauseInfo(m); if (i) this._emit('videoResumed', i); });
    on('publisherLayers', (m) => this._onPublisherLayers(m));
    on('offer', (o) => this._onOffer(o));
    on('reconnect', (m) => this._onReconnect(m));
    // The platform closed the room or removed us (NATS commands): no rejoin, no migration.
    on('roomClosed', (m) => this._sentAway('roomClosed', m));
    on('removed', (m) => this._sentAway('removed', m));
    on('focus', (ev) => { if (ev && typeof ev === 'object') this._emit('focus', ev); });
    on('message', (m) => { if (m && typeof m === 'object') this._emit('message', m); });
    on('error', (e) => this._emit('error', { where: 'server', ...(e || {}) }));
    on('disconnect', (reason) => {
      // During a move the migration itself reports failure.
      if (this.state === 'left' || this._migrating) return;
      // Dropped, not sent away: continue the same participant on a new socket.
      if (this.state === 'joined' && reason !== 'io server disconnect' && this._resume.token) {
        this._resumeSession(reason);
        return;
      }
      // The node went away under us (not a server-side disconnect: those are on purpose,
      // e.g. our identity joined elsewhere): rejoin on another live node.
      if (this.state === 'joined' && this.nodes.length > 0 && reason !== 'io server disconnect') {
        this._failover('node_lost');
        return;
      }
      this.state = 'disconnected';
      this._emit('disconnected', reason);
    });
    return new Promise((resolve, reject) => {
      const ok = () => { s.off('connect_error', bad); resolve(); };
      const bad = (e) => {
        s.off('connect', ok);
        reject(new StudyRoomError((e && e.message) || 'connect_error', `connection to ${url} refused`));
      };
      s.on('connect', ok);
      s.on('connect_error', bad);
    });
  }

  // Our node is lost (socket dropped, or media dead): move to another live node (ours last).
  // The page's own origin comes last: behind a load balancer it reaches a live node.
  _failover(reason) {
    const others = this.nodes.filter((u) => u !== this.url);
    const origin = redirectUrl(globalThis.location && globalThis.location.origin);
    const candidates = [...new Set([...others, this.url, ...(origin ? [origin] : [])])];
    this._migrate({ reason, url: candidates[0], deadlineMs: null, candidates });
  }

  // Leaves the current socket (without `leave`: the node sees a disconnect) and connects to
  // `url`, retrying a refused or failed connection a few times.
  // With `candidates`, each round tries every URL once, in order.
  async _reopen(url, candidates = null) {
    const old = this.socket;
    this.socket = null;
    if (old) old.close();
    const urls = candidates && candidates.length ? candidates : [url];
    for (let attempt = 1; ; attempt++) {
      for (const [i, u] of urls.entries()) {
        this.url = u;
        try {
          await this._openSocket(u);
          return;
        } catch (e) {
          const last = attempt >= CONNECT_ATTEMPTS && i === urls.length - 1;
          if (FATAL_CONNECT_CODES.has(e.code) || last || this.state === 'left') throw e;
        }
      }
      await sleep(retryDelay(attempt));
    }
  }

  /** Joins the room named in the token. Resolves with the join ack. */
  async join() {
    const res = await this._joinWithRetry();
    this._applyJoin(res);
    return res;
  }

  // `join` on the current socket. A node that is draining (refuses with `draining`, or
  // announced `reconnect` before our join was through) or full (`server_full`) is left for
  // the URL it named, or for our URL again (where a load balancer picks another node);
  // bounded attempts.
  async _joinWithRetry() {
    let refused = 'draining';
    for (let attempt = 1; ; attempt++) {
      let moved = null; // the room lives on another node (`moved`): go there at once
      let res;
      try {
        res = await this._request('join', {});
      } catch (e) {
        if (e.code === 'moved' && redirectUrl(e.url)) moved = redirectUrl(e.url);
        else if (e.code === 'draining' || e.code === 'server_full') refused = e.code;
        else throw e;
      }
      if (res) {
        await this._checkProtocol(res);
        if (!this._redirect) return res;
      }
      if (this.state === 'left') throw new StudyRoomError('left', 'left the room while joining');
      if (attempt >= JOIN_ATTEMPTS) {
        throw new StudyRoomError(moved ? 'moved' : refused, `no server took the join after ${attempt} attempts (last: ${this.url})`);
      }
      const url = moved || (this._redirect && this._redirect.url) || this.url;
      this._emit('reconnecting', { reason: moved ? 'moved' : refused, url, deadlineMs: (this._redirect && this._redirect.deadlineMs) ?? null, attempt });
      if (!moved) await sleep(retryDelay(attempt));
      if (this.state === 'left') throw new StudyRoomError('left', 'left the room while joining');
      await this._reopen(url);
    }
  }

  // A join ack from a server speaking a protocol revision we do not: leave it at once (the
  // room sees us go) and reject with `protocol_mismatch`.
  async _checkProtocol(res) {
    const spoken = StudyRoom.protocols;
    if (spoken.includes(res.protocol)) return;
    const theirs = Number.isInteger(res.protocol) ? res.protocol : 1;
    await this._request('leave', {}, 2000).catch(() => {});
    const s = this.socket;
    this.socket = null;
    if (s) s.close();
    this.state = 'disconnected';
    throw new StudyRoomError('protocol_mismatch',
      `the server at ${this.url} speaks protocol ${theirs}, this client speaks ${spoken.join(', ')}: update the client`);
  }

  _applyJoin(res) {
    this._keepResumeToken(res);
    this.participant = res.participant;
    this.iceServers = Array.isArray(res.iceServers) ? res.iceServers : [];
    this.nodes = Array.isArray(res.nodes) ? res.nodes.map(redirectUrl).filter(Boolean) : [];
    // Room events may arrive just before the ack (docs/protocol.md, Ordering): never list ourselves.
    this.participants.delete(this.participant.id);
    for (const p of res.participants || []) {
      if (p.id !== this.participant.id) this.participants.set(p.id, { ...p, tracks: p.tracks || [] });
    }
    this.state = 'joined';
    this._resolveJoined();
    this._leaveOnPageHide();
    this._restartOnNetworkChange();
    this._startViewReports();
    for (const p of this.participants.values()) this._emit('participantJoined', p);
    if (Array.isArray(res.focusHistory)) this._emit('focusHistory', res.focusHistory);
    this.chat = res.chat !== false;
    if (Array.isArray(res.chatHistory)) this._emit('chatHistory', res.chatHistory);
    if (this.participant.role === 'learner') this._startFocusReports();
  }

  _keepResumeToken(res) {
    this._resume = {
      token: typeof res.resumeToken === 'string' ? res.resumeToken : null,
      windowMs: Number.isFinite(res.resumeWindowMs) ? res.resumeWindowMs : 0,
    };
  }

  // The socket dropped under a joined session: resume it (see the header). Runs as
  // `_migrating`, so requests wait for it and no other move starts meanwhile.
  _resumeSession(reason) {
    const { token, windowMs } = this._resume;
    this._resume = { token: null, windowMs }; // single-use: the ack brings the next one
    this.state = 'reconnecting';
    this._emit('resuming', { reason });
    const resuming = this._tryResume(token, windowMs).then((outcome) => {
      if (this._migrating === resuming) this._migrating = null;
      if (this.state === 'left') return;
      if (outcome === 'resumed') {
        this._afterResume(); // once no longer `_migrating`: ICE restarts wait for that
        return;
      }
      // What a dropped socket did before resume existed.
      if (outcome === 'refused') {
        // (To the node a `reconnect` push named meanwhile, if any.)
        this._migrate({ reason: 'resume_failed', url: (this._redirect && this._redirect.url) || this.url, deadlineMs: null });
      } else if (this.nodes.length > 0) {
        this._failover('node_lost');
      } else {
        this.state = 'disconnected';
        const s = this.socket;
        this.socket = null;
        if (s) s.close();
        this._emit('disconnected', reason);
      }
    });
    this._migrating = resuming;
  }

  // Connects to our node again and sends `resume`, retrying a failed connection until the
  // deadline. Resolves 'resumed', 'refused' (the server said no: join afresh) or
  // 'unreachable'.
  async _tryResume(token, windowMs) {
    const budget = this.nodes.length > 0 ? RESUME_FAILOVER_MS : Math.max(0, windowMs - RESUME_MARGIN_MS);
    const deadline = Date.now() + budget;
    for (let attempt = 1; ; attempt++) {
      if (this.state === 'left') return 'refused';
      let res = null;
      try {
        await this._openSocketWithin(this.url, RESUME_CONNECT_TIMEOUT_MS);
        res = await this._request('resume', { resumeToken: token });
      } catch (e) {
        if (this.state === 'left') return 'refused';
        if (FATAL_CONNECT_CODES.has(e.code)) return 'refused';
        // A refusal from the server (resume_failed, token_expired, ...): no point retrying.
        if (!['transport', 'transport_error', 'transport_close', 'connect_timeout', 'ping_timeout'].includes(e.code)) {
          console.warn(`studyroom: resume refused (${e.code}); joining afresh`);
          return 'refused';
        }
      }
      // A server that now speaks another revision (upgraded meanwhile): join afresh, where
      // _checkProtocol refuses it.
      if (res && !StudyRoom.protocols.includes(res.protocol)) return 'refused';
      if (res) {
        this._applyResume(res);
        return 'resumed';
      }
      if (Date.now() + retryDelay(attempt) > deadline) return 'unreachable';
      await sleep(retryDelay(attempt));
    }
  }

  // _openSocket for a resume, given up (and closed) after `ms`.
  _openSocketWithin(url, ms) {
    let timer;
    const opened = this._openSocket(url, { keepSession: true });
    const s = this.socket;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        if (this.socket === s) { this.socket = null; s.close(); }
        reject(new StudyRoomError('connect_timeout', `no connection to ${url} within ${ms} ms`));
      }, ms);
    });
    return Promise.race([opened, timeout]).finally(() => clearTimeout(timer));
  }

  // The resume ack: the same participant, fresh ICE servers and token; the pushes we
  // missed follow on the socket and are handled as usual.
  _applyResume(res) {
    this._keepResumeToken(res);
    this.participant = res.participant;
    this.iceServers = Array.isArray(res.iceServers) ? res.iceServers : this.iceServers;
    if (Array.isArray(res.nodes)) this.nodes = res.nodes.map(redirectUrl).filter(Boolean);
    for (const pc of [this.publisherPc, this.subscriberPc]) {
      if (pc) pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.iceServers });
    }
    this.state = 'joined';
    this._resolveJoined();
    this._emit('resumed', { participant: this.participant });
    // Focus may have changed while we had no socket.
    const doc = globalThis.document;
    if (doc && this.participant.role === 'learner') {
      if (doc.visibilityState === 'hidden') this._reportFocus('lost', 'hidden');
      else if (!doc.hasFocus()) this._reportFocus('lost', 'blur');
      else this._reportFocus('regained', 'focus');
    }
  }

  // After a resume: restart ICE on both peer connections (a dropped socket often means a
  // changed network; docs/protocol.md, "ICE restart").
  _afterResume() {
    this.restartIce('resume').catch((e) => this._fail('restartIce', e));
  }

  // The node is draining (`reconnect` push). Joined: move now. Not joined yet: the join in
  // progress (or the next one) sees `_redirect` and goes there.
  _onReconnect(m) {
    const info = {
      reason: (m && m.reason) || 'draining',
      url: redirectUrl(m && m.url),
      deadlineMs: m && typeof m.deadlineMs === 'number' ? m.deadlineMs : null,
    };
    this._redirect = info;
    if (this.state === 'joined' && !this._migrating) this._migrate(info);
  }

  // Moves the whole session to another node: close both PCs, connect with the same token,
  // join, publish the same local tracks with their mute state.
  _migrate(info) {
    const url = info.url || this.url;
    this.state = 'reconnecting';
    this._emit('reconnecting', { reason: info.reason, url, deadlineMs: info.deadlineMs, attempt: 0 });
    const run = async () => {
      // Leave the old node first: nothing it says from now on (e.g. media_timeout once our
      // PCs are closed) is about the session we carry on elsewhere.
      const old = this.socket;
      this.socket = null;
      if (old) old.close();
      this._dropSession('reconnecting');
      // Spread a whole room's clients a little so they do not arrive at once.
      await sleep(Math.floor(Math.random() * RETRY_JITTER_MS));
      if (this.state === 'left') return;
      await this._reopen(url, info.candidates);
      const res = await this._joinWithRetry();
      if (this.state === 'left') return;
      this._applyJoin(res);
      await this._republish();
      this._emit('migrated', { url: this.url, participant: this.participant });
    };
    this._migrating = run().catch((e) => {
      if (this.state === 'left') return;
      this._fail('reconnect', e);
      this.state = 'disconnected';
      const s = this.socket;
      this.socket = null;
      if (s) s.close();
      this._emit('disconnected', `reconnect failed (${e.code || e.message})`);
    }).finally(() => {
      this._migrating = null;
      // The new node may itself have announced `reconnect` while we published there.
      if (this._redirect && this.state === 'joined') this._migrate(this._redirect);
    });
    return this._migrating;
  }

  // Forgets the media session with the old node; local tracks keep running.
  _dropSession(reason) {
    for (const w of Object.values(this._iceWatch)) clearTimeout(w.timer);
    for (const pc of [this.publisherPc, this.subscriberPc]) if (pc) pc.close();
    this.publisherPc = null;
    this.subscriberPc = null;
    for (const [trackId, entry] of [...this.remoteTracks]) {
      this.remoteTracks.delete(trackId);
      this._emit('remoteTrackEnded', entry.participantId, trackId);
    }
    this.remoteByMid = new Map();
    for (const id of [...this.participants.keys()]) {
      this.participants.delete(id);
      this._emit('participantLeft', { id, reason });
    }
    this.participant = null;
    for (const lt of this.localTracks.values()) {
      lt.trackId = null;
      lt.transceiver = null;
    }
  }

  // Publishes every still-live local track again on a new publisher PC, in the same order
  // and with the same sources and mute state.
  async _republish() {
    for (const lt of [...this.localTracks.values()]) {
      if (lt.track.readyState === 'live') continue;
      this.localTracks.delete(lt.source);
      this._emit('localTrackEnded', lt.source);
    }
    if (this.localTracks.size === 0) return;
    const pc = this._ensurePublisherPc();
    for (const lt of this.localTracks.values()) {
      lt.transceiver = pc.addTransceiver(lt.track, this._sendInit(lt.source, lt.stream));
      if (lt.source === 'camera' && this.videoCodec) lt.transceiver.setCodecPreferences(videoCodecPreferences(this.videoCodec));
      lt.track.enabled = !lt.muted;
    }
    const res = await this._negotiatePublisher();
    // The offer carried each track's mute state; make sure the server took it.
    for (const t of res.tracks || []) {
      const lt = this.localTracks.get(t.source);
      if (lt && lt.trackId === t.id && typeof t.muted === 'boolean' && t.muted !== lt.muted) {
        await this._request('mute', { trackId: t.id, muted: lt.muted });
      }
    }
  }

  // Waits for a move to another node to finish (nothing to wait for when none is going on).
  async _settled() {
    while (this._migrating) await this._migrating;
  }

  // A request failed because the node went away under it: a move is (or was) in progress
  // since `epoch`, and it takes care of what the request was for.
  _movedSince(epoch) {
    return this.state !== 'left' && (this._migrating !== null || this._epoch !== epoch);
  }

  _localSummary() {
    return [...this.localTracks.values()].map((t) => ({ source: t.source, trackId: t.trackId }));
  }

  /** Publishes camera and/or microphone (getUserMedia unless a stream is given). */
  async publish({ camera = true, microphone = true, stream = null } = {}) {
    await this._settled();
    const cameraCodecs = this.videoCodec ? videoCodecPreferences(this.videoCodec) : null;
    const media = stream || await navigator.mediaDevices.getUserMedia({ video: camera, audio: microphone });
    const pc = this._ensurePublisherPc();
    const ordered = [...media.getVideoTracks(), ...media.getAudioTracks()];
    const added = [];
    for (const track of ordered) {
      const source = track.kind === 'video' ? 'camera' : 'microphone';
      if (this.localTracks.has(source)) throw new StudyRoomError('already_published', source);
      const transceiver = pc.addTransceiver(track, this._sendInit(source, media));
      this.localTracks.set(source, { source, track, stream: media, transceiver, trackId: null, muted: false });
      added.push(source);
      if (source === 'camera' && cameraCodecs) transceiver.setCodecPreferences(cameraCodecs);
      this._emit('localTrack', source, track);
    }
    const epoch = this._epoch;
    try {
      await this._negotiatePublisher();
    } catch (e) {
      if (this._movedSince(epoch)) { // the move publishes these tracks on the new node
        await this._settled();
        if (this.state === 'joined') return this._localSummary();
      }
      // e.g. forbidden: take back what we added
      for (const source of added) {
        const lt = this.localTracks.get(source);
        this.localTracks.delete(source);
        lt.track.stop();
        if (lt.transceiver) lt.transceiver.stop();
        this._emit('localTrackEnded', source);
      }
      throw e;
    }
    return this._localSummary();
  }

  // Transceiver init for one of our sources: the camera as three simulcast layers when asked.
  _sendInit(source, stream) {
    const init = { direction: 'sendonly', streams: [stream] };
    if (this.simulcast && source === 'camera') {
      init.sendEncodings = [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { rid: 'f', maxBitrate: 1_500_000 },
      ];
    }
    return init;
  }

  /**
   * Which simulcast layer to receive of a participant's video source: 'low', 'medium' or
   * 'high' (the default). The server switches at the next key frame of that layer; tracks
   * sent without simulcast are unaffected.
   */
  async setQuality(participantId, source, quality) {
    await this._settled();
    await this._request('setQuality', { participantId, source, quality });
  }

  /** Mutes or unmutes one of our tracks, by server track id or by source name. */
  async setMuted(trackIdOrSource, muted) {
    await this._settled();
    const lt = this._localTrack(trackIdOrSource);
    if (!lt) throw new StudyRoomError('unknown_track', `no local track ${trackIdOrSource}`);
    lt.track.enabled = !muted;
    lt.muted = !!muted;
    const epoch = this._epoch;
    try {
      if (lt.trackId) await this._request('mute', { trackId: lt.trackId, muted: !!muted });
    } catch (e) {
      if (!this._movedSince(epoch)) throw e; // else the move publishes it with this state
    }
    this._emit('localMuted', lt.source, lt.muted);
  }

  /** Adds a screen share (getDisplayMedia) as another mid on the publisher PC. */
  async startScreenShare() {
    await this._settled();
    if (this.localTracks.has('screen')) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    const pc = this._ensurePublisherPc();
    const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    this.localTracks.set('screen', { source: 'screen', track, stream, transceiver, trackId: null, muted: false });
    // The browser's own "stop sharing" button ends the track.
    track.addEventListener('ended', () => this.stopScreenShare().catch((e) => this._fail('stopScreenShare', e)));
    this._emit('localTrack', 'screen', track);
    const epoch = this._epoch;
    try {
      await this._negotiatePublisher();
    } catch (e) {
      if (this._movedSince(epoch)) {
        await this._settled();
        if (this.state === 'joined') return;
      }
      const lt = this.localTracks.get('screen');
      this.localTracks.delete('screen');
      track.stop();
      if (lt && lt.transceiver) lt.transceiver.direction = 'inactive';
      this._emit('localTrackEnded', 'screen');
      throw e;
    }
  }

  /** Stops the screen share and unpublishes it. */
  async stopScreenShare() {
    await this._settled();
    const lt = this.localTracks.get('screen');
    if (!lt) return;
    this.localTracks.delete('screen');
    lt.track.stop();
    if (lt.transceiver) {
      await lt.transceiver.sender.replaceTrack(null);
      // Not sending any more; the next publish offer shows this m-line inactive.
      lt.transceiver.direction = 'inactive';
    }
    this._emit('localTrackEnded', 'screen');
    if (lt.trackId && this.state === 'joined') await this._request('unpublish', { trackId: lt.trackId });
  }

  /**
   * Proctors: the room's recent focus events (oldest first), or one participant's.
   * Learners are refused with `forbidden`.
   */
  async focusHistory(participantId) {
    if (participantId !== undefined && typeof participantId !== 'string') {
      throw new StudyRoomError('bad_request', 'participantId must be a string');
    }
    const res = await this._request('focusHistory', participantId === undefined ? {} : { participantId });
    return Array.isArray(res && res.events) ? res.events : [];
  }

  /**
   * Sends a chat message to the room (up to 2 000 characters; trimmed by the server).
   * Resolves with the ChatMessage as the room sees it (also emitted as `message`); rejects
   * with `message_too_long`, `rate_limited`, `chat_disabled` or `bad_request`.
   */
  async sendMessage(text) {
    if (typeof text !== 'string') throw new StudyRoomError('bad_request', 'text must be a string');
    const res = await this._request('message', { text });
    this._emit('message', res.message);
    return res.message;
  }

  /** The room's chat history, oldest first (the last 100 messages). */
  async chatHistory() {
    const res = await this._request('history', {});
    return Array.isArray(res && res.messages) ? res.messages : [];
  }

  // The device changed networks (Wi-Fi to LTE, a cable pulled and back): restart ICE at once
  // instead of waiting for ICE to notice the dead path (several seconds, then
  // ICE_RESTART_AFTER_MS). `online` fires when connectivity returns; the Network Information
  // API (where the browser has it) fires `change` when the connection type changes.
  _restartOnNetworkChange() {
    if (this._netWatch || !globalThis.addEventListener) return;
    this._netWatch = true;
    const restart = () => { if (this.state === 'joined') this.restartIce('network'); };
    globalThis.addEventListener('online', restart);
    const conn = globalThis.navigator && globalThis.navigator.connection;
    if (conn && conn.addEventListener) conn.addEventListener('change', restart);
  }

  // A closed tab (or a navigation away) is a departure, not a lost network: say `leave` so
  // the others see it at once instead of after the resume window. Fire and forget: the page
  // is going. A page kept in the back/forward cache (persisted) is not gone.
  _leaveOnPageHide() {
    if (this._pageHideWatch || !globalThis.addEventListener) return;
    this._pageHideWatch = true;
    globalThis.addEventListener('pagehide', (ev) => {
      if (ev.persisted || this.state !== 'joined' || !this.socket || !this.socket.connected) return;
      try { this.socket.emit('leave', {}); } catch { /* the page is going anyway */ }
    });
  }

  // ---- learners: focus reports ----------------------------------------------------------

  // Listens to the page's visibility, window focus and fullscreen changes (once per page) and
  // tells the node we just joined where we stand: a new participant counts as focused there.
  _startFocusReports() {
    const doc = globalThis.document;
    if (!doc) return;
    this._focusSent = 'regained';
    if (!this._focusWatch) {
      const watch = new AbortController();
      this._focusWatch = watch;
      const opts = { signal: watch.signal };
      let blurTimer = null;
      let shownAt = -Infinity; // when the tab last became visible (performance.now())
      let hadFullscreen = !!doc.fullscreenElement;
      doc.addEventListener('visibilitychange', () => {
        if (doc.visibilityState === 'hidden') {
          this._reportFocus('lost', 'hidden');
        } else {
          shownAt = performance.now();
          this._reportFocus('regained', 'visible'); // unless the window has no focus yet
        }
      }, opts);
      globalThis.addEventListener('blur', () => {
        clearTimeout(blurTimer);
        blurTimer = setTimeout(() => {
          if (doc.visibilityState === 'visible' && !doc.hasFocus()) this._reportFocus('lost', 'blur');
        }, FOCUS_SETTLE_MS);
      }, opts);
      globalThis.addEventListener('focus', () => {
        clearTimeout(blurTimer);
        this._reportFocus('regained', performance.now() - shownAt < FOCUS_SETTLE_MS ? 'visible' : 'focus');
      }, opts);
      doc.addEventListener('fullscreenchange', () => {
        if (doc.fullscreenElement) {
          hadFullscreen = true;
          this._reportFocus('regained', 'fullscreen-enter');
        } else if (hadFullscreen) {
          hadFullscreen = false;
          this._reportFocus('lost', 'fullscreen-exit');
        }
      }, opts);
      watch.signal.addEventListener('abort', () => clearTimeout(blurTimer));
    }
    if (doc.visibilityState === 'hidden') this._reportFocus('lost', 'hidden');
    else if (!doc.hasFocus()) this._reportFocus('lost', 'blur');
  }

  // Sends one focus change (never the same state twice in a row). 'regained' only counts
  // when the page is visible and focused: a window focused while its tab is still hidden,
  // or a tab shown in an unfocused window, has not got the learner back.
  _reportFocus(state, reason) {
    if (this.state !== 'joined' || !this.participant || this.participant.role !== 'learner') return;
    const doc = globalThis.document;
    if (state === 'regained' && (doc.visibilityState !== 'visible' || !doc.hasFocus())) return;
    if (state === this._focusSent) return;
    this._focusSent = state;
    const at = Date.now();
    const epoch = this._epoch;
    this._request('focus', { state, reason, at }).then((ack) => {
      this._emit('focusReported', { state, reason, at, ack });
    }, (e) => {
      if (epoch !== this._epoch) return; // that node is gone; the next join starts afresh
      // The server's view is unknown now: let the next change through whatever it is.
      if (this._focusSent === state) this._focusSent = null;
      this._fail('focus', e);
    });
  }

  /** Leaves the room: tells the server, then closes everything. */
  async leave() {
    if (this.state === 'left') return;
    try {
      if (this.socket && this.socket.connected) await this._request('leave', {}, 3000);
    } catch (e) {
      console.warn('studyroom: leave request failed, closing anyway:', e.message);
    }
    this._close();
  }

  _close() {
    this.state = 'left';
    this._redirect = null;
    this._stopViewReports();
    if (this._focusWatch) this._focusWatch.abort();
    this._focusWatch = null;
    for (const lt of this.localTracks.values()) lt.track.stop();
    this.localTracks.clear();
    for (const w of Object.values(this._iceWatch)) clearTimeout(w.timer);
    for (const pc of [this.publisherPc, this.subscriberPc]) if (pc) pc.close();
    this.publisherPc = null;
    this.subscriberPc = null;
    this.remoteTracks.clear();
    this.remoteByMid.clear();
    if (this.socket) this.socket.close();
    this._emit('left');
  }

  // ---- Adaptive stream (see the header) ----

  _startViewReports() {
    if (!this.adaptiveStream || this._viewTimer || typeof document === 'undefined') return;
    if (typeof IntersectionObserver === 'function') {
      this._viewObserver = new IntersectionObserver((entries) => {
        for (const e of entries) this._onScreen.set(e.target, e.isIntersecting);
      });
    }
    this._viewTimer = setInterval(() => this._reportViews(), VIEW_POLL_MS);
  }

  _stopViewReports() {
    if (this._viewTimer) clearInterval(this._viewTimer);
    this._viewTimer = null;
    if (this._viewObserver) this._viewObserver.disconnect();
    this._viewObserver = null;
    this._views.clear();
  }

  // How the page shows one remote video track now: {visible, width, height}, or null when
  // no <video> element ever showed it.
  _viewOf(trackId, track, videos, tabHidden) {
    const state = this._views.get(trackId) || { sent: null, pending: null, shown: false };
    this._views.set(trackId, state);
    const dpr = globalThis.devicePixelRatio || 1;
    let best = null;
    for (const el of videos) {
      const src = el.srcObject;
      if (!src || typeof src.getVideoTracks !== 'function' || !src.getVideoTracks().includes(track)) continue;
      state.shown = true;
      if (this._viewObserver && !this._onScreen.has(el)) {
        this._onScreen.set(el, true); // until the observer's first answer
        this._viewObserver.observe(el);
      }
      const width = Math.round(el.clientWidth * dpr);
      const height = Math.round(el.clientHeight * dpr);
      if (!el.isConnected || width === 0 || height === 0 || this._onScreen.get(el) === false) continue;
      if (!best || width * height > best.width * best.height) best = { width, height };
    }
    if (!state.shown) return null;
    if (tabHidden || !best) return { visible: false, width: 0, height: 0 };
    return { visible: true, width: Math.min(best.width, 16384), height: Math.min(best.height, 16384) };
  }

  _reportViews() {
    if (this.state !== 'joined' || !this.socket) return;
    const videos = [...document.querySelectorAll('video')];
    const tabHidden = document.visibilityState === 'hidden';
    const same = (a, b) => a && b && a.visible === b.visible && a.width === b.width && a.height === b.height;
    const views = [];
    for (const [trackId, entry] of this.remoteTracks) {
      if (entry.kind !== 'video' || !entry.track) continue;
      const view = this._viewOf(trackId, entry.track, videos, tabHidden);
      if (!view) continue;
      const state = this._views.get(trackId);
      if (same(view, state.sent)) { state.pending = null; continue; }
      // A video shown again goes at once; other changes once they held for one poll.
      const showing = view.visible && !(state.sent && state.sent.visible);
      if (showing || same(view, state.pending)) {
        state.sent = view;
        state.pending = null;
        views.push({ trackId, ...view });
      } else {
        state.pending = view;
      }
    }
    for (const trackId of [...this._views.keys()]) if (!this.remoteTracks.has(trackId)) this._views.delete(trackId);
    if (views.length === 0) return;
    const epoch = this._epoch;
    this._request('trackView', { views: views.slice(0, 128) }).catch((e) => {
      // Sent again at the next change; a server without trackView (older) ignores us.
      if (epoch === this._epoch) {
        for (const v of views) { const st = this._views.get(v.trackId); if (st) st.sent = null; }
        console.warn('studyroom: trackView failed:', e.code || e.message);
      }
    });
  }

  // ---- Dynacast: the server says which of our video layers somebody wants ----

  _onPublisherLayers(m) {
    if (!m || typeof m.trackId !== 'string' || !Array.isArray(m.layers)) return;
    const lt = this._localTrack(m.trackId);
    if (!lt || !lt.transceiver) return;
    const sender = lt.transceiver.sender;
    lt.layersChain = (lt.layersChain || Promise.resolve()).then(async () => {
      const params = sender.getParameters();
      const encodings = params.encodings || [];
      let changed = false;
      for (const l of m.layers) {
        if (!l || typeof l.active !== 'boolean') continue;
        const enc = l.rid == null
          ? (encodings.length === 1 ? encodings[0] : null)
          : encodings.find((e) => e.rid === l.rid);
        if (!enc || enc.active === l.active) continue;
        enc.active = l.active;
        changed = true;
      }
      if (changed) await sender.setParameters(params);
      this._emit('publisherLayers', {
        trackId: m.trackId,
        source: lt.source,
        layers: encodings.map((e) => ({ rid: e.rid ?? null, active: e.active !== false })),
      });
    }).catch((e) => this._fail('publisherLayers', e));
  }

  _localTrack(key) {
    if (this.localTracks.has(key)) return this.localTracks.get(key);
    for (const lt of this.localTracks.values()) if (lt.trackId === key) return lt;
    return null;
  }

  _newPc(which) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
    const current = () => pc === this._pc(which);
    pc.addEventListener('icecandidate', (ev) => { if (current()) this._onLocalCandidate(which, ev.candidate); });
    pc.addEventListener('connectionstatechange', () => {
      if (current()) this._emit('connectionState', which, pc.connectionState);
    });
    if (this._iceWatch[which]) clearTimeout(this._iceWatch[which].timer);
    this._iceWatch[which] = { timer: null, running: false, attempts: 0 };
    pc.addEventListener('iceconnectionstatechange', () => { if (current()) this._watchIce(which, pc); });
    return pc;
  }

  _pc(which) {
    return which === 'publisher' ? this.publisherPc : this.subscriberPc;
  }

  // ICE restart (docs/protocol.md, "ICE restart"): a peer connection whose ICE state stays
  // `disconnected` for ICE_RESTART_AFTER_MS, or goes `failed`, restarts ICE, and again every
  // ICE_RETRY_MS while it is not connected (the network may still be gone). The participant,
  // its tracks and everyone's view of it stay as they are. When the server does not answer a
  // restart within ICE_RESTART_ACK_MS and other nodes are known, the node itself is gone
  // (frozen): move to another node ('media_lost').
  _watchIce(which, pc) {
    const w = this._iceWatch[which];
    clearTimeout(w.timer);
    const s = pc.iceConnectionState;
    if (s === 'connected' || s === 'completed') {
      w.attempts = 0;
    } else if (s === 'failed') {
      this._restartIce(which, 'failed');
    } else if (s === 'disconnected') {
      w.timer = setTimeout(() => this._restartIce(which, 'disconnected'), ICE_RESTART_AFTER_MS);
    }
  }

  /** Restarts ICE on both peer connections now (e.g. the app knows the network changed). */
  restartIce(reason = 'manual') {
    return Promise.all(['publisher', 'subscriber'].map((w) => this._restartIce(w, reason)));
  }

  async _restartIce(which, reason) {
    const pc = this._pc(which);
    const w = this._iceWatch[which];
    if (!pc || !w || this.state !== 'joined' || this._migrating || pc.signalingState === 'closed') return;
    clearTimeout(w.timer);
    if (w.running) return;
    w.running = true;
    w.attempts += 1;
    this._emit('iceRestart', { target: which, reason, attempt: w.attempts });
    const epoch = this._epoch;
    try {
      if (which === 'publisher') await this._negotiatePublisher({ iceRestart: true, timeoutMs: ICE_RESTART_ACK_MS });
      else await this._request('restartIce', {}, ICE_RESTART_ACK_MS);
    } catch (e) {
      if (epoch !== this._epoch || this.state !== 'joined') return;
      if (e.code === 'transport' && this.nodes.length > 0 && !this._migrating) {
        this._failover('media_lost');
        return;
      }
      this._fail(`restartIce(${which})`, e);
    } finally {
      w.running = false;
    }
    if (epoch !== this._epoch) return;
    w.timer = setTimeout(() => {
      if (this._pc(which) === pc && !['connected', 'completed'].includes(pc.iceConnectionState)) {
        this._restartIce(which, 'retry');
      }
    }, ICE_RETRY_MS);
  }

  _ensurePublisherPc() {
    if (this.state !== 'joined') throw new StudyRoomError('not_joined', 'publish before join()');
    if (!this.publisherPc) this.publisherPc = this._newPc('publisher');
    return this.publisherPc;
  }

  _onLocalCandidate(which, candidate) {
    const init = candidate ? candidate.toJSON() : null;
    if (!this._ready[which]) {
      this._pending[which].push(init);
      return;
    }
    this._sendCandidate(which, init);
  }

  _sendCandidate(which, candidate) {
    if (!this.socket || !this.socket.connected) return;
    const epoch = this._epoch;
    this._request('ice', { target: which, candidate }).catch((e) => {
      if (epoch === this._epoch) this._fail(`ice(${which})`, e);
    });
  }

  _flushCandidates(which) {
    this._ready[which] = true;
    const queued = this._pending[which].splice(0);
    for (const c of queued) this._sendCandidate(which, c);
  }

  // Publisher negotiations run one after another: offer -> `publish` -> answer.
  _negotiatePublisher({ iceRestart = false, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    const run = async () => {
      const pc = this.publisherPc;
      const offer = await pc.createOffer({ iceRestart });
      await pc.setLocalDescription(offer);
      const tracks = [];
      for (const lt of this.localTracks.values()) {
        if (!lt.transceiver) continue;
        tracks.push({ mid: lt.transceiver.mid, source: lt.source, muted: lt.muted });
      }
      let res;
      try {
        const sdp = this.dtx ? offerWithDtx(pc.localDescription.sdp) : pc.localDescription.sdp;
        res = await this._request('publish', { sdp, tracks }, timeoutMs);
      } catch (e) {
        if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
        throw e;
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: res.sdp });
      for (const t of res.tracks || []) {
        const lt = this.localTracks.get(t.source);
        if (lt) lt.trackId = t.id;
      }
      this._flushCandidates('publisher');
      return res;
    };
    const p = this._pubChain.then(run);
    this._pubChain = p.catch(() => {});
    return p;
  }

  // Subscriber offers are applied strictly one at a time, in arrival order. An offer from a
  // socket we have since left (moved to another node) is dropped.
  _onOffer(offer) {
    const epoch = this._epoch;
    const joined = this._joined;
    this._subChain = this._subChain
      .then(() => this._applyOffer(offer, epoch, joined))
      .catch((e) => { if (epoch === this._epoch) this._fail('subscriber offer', e); });
  }

  async _applyOffer({ sdp, tracks }, epoch, joined) {
    await joined;
    if (this.state !== 'joined' || epoch !== this._epoch) return;
    if (!this.subscriberPc) this.subscriberPc = this._newPc('subscriber');
    const pc = this.subscriberPc;
    const mapping = new Map((tracks || []).map((t) => [t.mid, t]));
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (epoch !== this._epoch) return;
    this.remoteByMid = mapping;
    await this._request('answer', { sdp: pc.localDescription.sdp });
    if (epoch !== this._epoch) return;
    this._flushCandidates('subscriber');
    this._reconcileRemoteTracks(pc, mapping);
  }

  // After each negotiation: announce tracks that now arrive on a mid, retire those gone.
  _reconcileRemoteTracks(pc, mapping) {
    const live = new Set();
    for (const tr of pc.getTransceivers()) {
      const info = tr.mid != null ? mapping.get(tr.mid) : null;
      if (!info) continue;
      if (tr.currentDirection !== 'recvonly' && tr.currentDirection !== 'sendrecv') continue;
      live.add(info.trackId);
      const prev = this.remoteTracks.get(info.trackId);
      if (prev && prev.mid === tr.mid) continue;
      this.remoteTracks.set(info.trackId, { ...info, track: tr.receiver.track });
      this._emit('remoteTrack', info.participantId, info.trackId, info.kind, info.source, tr.receiver.track);
    }
    for (const [trackId, entry] of [...this.remoteTracks]) {
      if (live.has(trackId)) continue;
      this.remoteTracks.delete(trackId);
      this._emit('remoteTrackEnded', entry.participantId, trackId);
    }
  }

  _onParticipantJoined(p) {
    if (!p || (this.participant && p.id === this.participant.id)) return;
    this.participants.set(p.id, { ...p, tracks: p.tracks || [] });
    this._emit('participantJoined', p);
  }

  _onParticipantLeft(m) {
    if (!m) return;
    this.participants.delete(m.id);
    this._emit('participantLeft', m);
  }

  _onTrackPublished(t) {
    if (!t) return;
    if (this.participant && t.participantId === this.participant.id) {
      const lt = this.localTracks.get(t.source);
      if (lt && !lt.trackId) lt.trackId = t.id;
    } else {
      const p = this.participants.get(t.participantId);
      if (p) p.tracks = [...p.tracks.filter((x) => x.id !== t.id), t];
    }
    this._emit('trackPublished', t);
  }

  _onTrackUnpublished(m) {
    if (!m) return;
    const p = this.participants.get(m.participantId);
    if (p) p.tracks = p.tracks.filter((x) => x.id !== m.id);
    this._emit('trackUnpublished', m);
  }

  _sentAway(event, m) {
    if (this.state === 'left') return;
    this._emit(event, m || {});
    this._close();
  }

  // The server paused or resumed one remote video for bandwidth: name its participant.
  _videoPauseInfo(m) {
    if (!m || typeof m.trackId !== 'string') return null;
    let participantId = null;
    for (const p of this.participants.values()) {
      if (p.tracks.some((t) => t.id === m.trackId)) participantId = p.id;
    }
    return { trackId: m.trackId, participantId, reason: m.reason || 'bandwidth' };
  }

  _onTrackMuted(m) {
    if (!m) return;
    // One of our own tracks muted by the platform (NATS `track.mute`): stop sending it
    // here too, so the page shows the truth; unmuting stays the learner's decision.
    const own = this.participant && m.participantId === this.participant.id;
    const lt = own && m.muted ? this._localTrack(m.id) : null;
    if (lt && !lt.muted) {
      lt.track.enabled = false;
      lt.muted = true;
      this._emit('localMuted', lt.source, true);
    }
    const p = this.participants.get(m.participantId);
    const t = p && p.tracks.find((x) => x.id === m.id);
    if (t) t.muted = m.muted;
    this._emit('trackMuted', m);
  }
}
