// app.js — the demo page's UI on top of studyroom.js.
//
// `/?room=ROOM&name=NAME[&role=learner|proctor][&publish=0][&loss=N][&codec=VP8|VP9|H264|AV1]`
// fetches a dev token from `/dev/token` (the query but `codec` passed through) and joins at
// once, with camera and mic unless the token does not grant publishing; `codec` forces the
// camera's video codec (StudyRoom's `videoCodec`). Without room and name it shows the join form.
// For tests: `window.studyroom` is the StudyRoom, remote tiles carry `data-participant-id`
// (and data-mic-muted / data-cam-muted / data-speaking), and `document.body.dataset.state`
// goes connecting -> joined (after publishing, if we publish) -> left | disconnected | error.
// When the server drains (a `reconnect` push, or a join refused with `draining`) the state is
// `reconnecting` with "다른 서버로 이동 중 / Moving to another server" until StudyRoom has
// joined and published on the other node (then `joined` again); `data-server` is the URL of
// the node the page talks to.
// Chat (#chat-panel, hidden when the token's grant turned it off; `&chat=0` asks the dev
// token for that): the log (#chat-log, a polite live region, entries with
// data-message-id / data-from) and a form (Enter sends).
// Proctors (`role=proctor`: publishes nothing) get a live feed of the learners' focus events
// (#focus-feed, newest on top, pre-filled from the join ack's history; each entry carries
// data-participant-id / data-state / data-reason / data-at / data-lost-ms), and a learner's
// tile is marked while its focus is lost (data-focus="lost", red border, "자리 비움 / Away");
// data-focus="regained" once it is back. `document.body.dataset.role` is our role.

import { StudyRoom } from './studyroom.js';

const $ = (sel, root = document) => root.querySelector(sel);
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const ROLE_LABEL = { learner: '학습자 / Learner', proctor: '감독관 / Proctor' };
const FOCUS_STATE_LABEL = { lost: '이탈 / Left', regained: '복귀 / Back' };
const FOCUS_REASON_LABEL = {
  hidden: '탭 숨김 / Tab hidden',
  visible: '탭 표시 / Tab visible',
  blur: '창 포커스 잃음 / Window lost focus',
  focus: '창 포커스 / Window focused',
  'fullscreen-exit': '전체 화면 종료 / Left fullscreen',
  'fullscreen-enter': '전체 화면 / Entered fullscreen',
};
const FOCUS_FEED_MAX = 500;

function setState(state, message = '', errorCode = '') {
  document.body.dataset.state = state;
  if (errorCode) document.body.dataset.error = errorCode;
  $('#status').textContent = message;
}

// Reads the claims of our own token (no verification: only to know our grants for the UI).
function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

async function fetchToken(query) {
  const params = new URLSearchParams();
  for (const key of ['room', 'name', 'role', 'publish', 'loss', 'chat']) {
    if (query.has(key)) params.set(key, query.get(key));
  }
  const res = await fetch(`/dev/token?${params}`);
  const body = await res.text();
  if (!res.ok) throw Object.assign(new Error(`토큰 발급 실패 / Token request failed (${res.status}): ${body}`), { code: 'token_request' });
  const json = JSON.parse(body);
  if (typeof json.token !== 'string') throw Object.assign(new Error('토큰 응답 오류 / Bad token response'), { code: 'token_request' });
  return json.token;
}

function showForm(query) {
  const form = $('#join-form');
  form.hidden = false;
  $('#join-room').value = query.get('room') || '';
  $('#join-name').value = query.get('name') || '';
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams({
      room: $('#join-room').value.trim(),
      name: $('#join-name').value.trim(),
      role: $('#join-role').value,
    });
    if (!$('#join-publish').checked) params.set('publish', '0');
    location.search = `?${params}`;
  });
}

// ---- tiles -------------------------------------------------------------------------------

function tileFor(participantId) {
  return document.querySelector(`.tile[data-participant-id="${CSS.escape(participantId)}"]`);
}

function ensureTile(p) {
  let tile = tileFor(p.id);
  if (tile) {
    if (p.name) { // created early from a track; now we know who it is
      $('.name', tile).textContent = p.name;
      $('.role', tile).textContent = ROLE_LABEL[p.role] || '';
      tile.setAttribute('aria-label', p.name);
    }
    return tile;
  }
  tile = document.createElement('div');
  tile.className = 'tile';
  tile.dataset.participantId = p.id;
  tile.setAttribute('role', 'group');
  tile.setAttribute('aria-label', p.name || p.identity || p.id);
  tile.innerHTML = `
    <div class="media">
      <video class="camera" autoplay playsinline muted></video>
      <video class="screen" autoplay playsinline muted hidden></video>
    </div>
    <audio class="mic" autoplay></audio>
    <div class="label">
      <span class="name"></span>
      <span class="role"></span>
      <span class="ind mic-off" hidden>마이크 꺼짐 / Mic off</span>
      <span class="ind cam-off" hidden>카메라 꺼짐 / Camera off</span>
      <span class="ind away" hidden>자리 비움 / Away</span>
    </div>`;
  $('.name', tile).textContent = p.name || p.identity || p.id;
  $('.role', tile).textContent = ROLE_LABEL[p.role] || '';
  $('#tiles').appendChild(tile);
  applyFocusMark(p.id);
  return tile;
}

function mediaElement(tile, source) {
  if (source === 'microphone') return $('audio.mic', tile);
  if (source === 'screen') return $('video.screen', tile);
  return $('video.camera', tile);
}

function attach(el, track, trackId) {
  el.srcObject = new MediaStream([track]);
  el.dataset.trackId = trackId;
  el.hidden = false;
  el.play().catch(() => { /* autoplay may wait for a user gesture; the element retries on its own */ });
}

function detach(tile, trackId) {
  for (const el of tile.querySelectorAll('video, audio')) {
    if (el.dataset.trackId !== trackId) continue;
    el.srcObject = null;
    delete el.dataset.trackId;
    if (el.classList.contains('screen')) el.hidden = true;
  }
}

// Muted indicators follow the server's view of the participant's tracks.
function refreshIndicators(room, participantId) {
  const p = room.participants.get(participantId);
  const tile = tileFor(participantId);
  if (!p || !tile) return;
  const mic = p.tracks.find((t) => t.source === 'microphone');
  const cam = p.tracks.find((t) => t.source === 'camera');
  const micMuted = !mic || mic.muted;
  const camMuted = !cam || cam.muted;
  tile.dataset.micMuted = String(micMuted);
  tile.dataset.camMuted = String(camMuted);
  $('.mic-off', tile).hidden = !micMuted;
  $('.cam-off', tile).hidden = !camMuted;
}

function setLocalIndicator(source, muted) {
  const tile = $('#local-tile');
  if (source === 'microphone') { $('.mic-off', tile).hidden = !muted; tile.dataset.micMuted = String(muted); }
  if (source === 'camera') { $('.cam-off', tile).hidden = !muted; tile.dataset.camMuted = String(muted); }
}

// ---- proctoring: focus feed and tile marks ------------------------------------------------

// The proctor's focus log beside the tiles (built here, so index.html stays the same for
// every role). The feed is a polite live region: new entries are read out as they come.
function showProctorPanel() {
  if ($('#proctor-panel')) return;
  const panel = document.createElement('section');
  panel.id = 'proctor-panel';
  panel.setAttribute('aria-labelledby', 'proctor-title');
  panel.innerHTML = `
    <h2 id="proctor-title">집중 기록 <span lang="en">/ Focus log</span></h2>
    <p id="focus-empty">아직 기록이 없습니다. / Nothing yet.</p>
    <ol id="focus-feed" aria-live="polite" aria-relevant="additions"
        aria-label="학습자 집중 이벤트, 최신순 / Learners' focus events, newest first"></ol>`;
  $('#tiles').after(panel);
}

// participantId -> the newest FocusEvent seen for it (pushes and history may interleave).
const latestFocus = new Map();
const feedKeys = new Set();

function applyFocusMark(participantId) {
  const tile = tileFor(participantId);
  const ev = latestFocus.get(participantId);
  if (!tile || !ev) return;
  const lost = ev.state === 'lost';
  tile.dataset.focus = lost ? 'lost' : 'regained';
  $('.away', tile).hidden = !lost;
}

function clock(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

function duration(ms) {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}초 / ${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  return `${m}분 ${rest}초 / ${m} min ${rest} s`;
}

function feedEntry(ev) {
  const li = document.createElement('li');
  li.className = `focus-entry ${ev.state}`;
  li.dataset.participantId = ev.participantId;
  li.dataset.identity = ev.participant || '';
  li.dataset.state = ev.state;
  li.dataset.reason = ev.reason;
  li.dataset.at = String(ev.at);
  if (typeof ev.lost_ms === 'number') li.dataset.lostMs = String(ev.lost_ms);
  const time = document.createElement('time');
  time.dateTime = new Date(ev.at).toISOString();
  time.textContent = clock(ev.at);
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = ev.name || ev.participant || ev.participantId;
  const state = document.createElement('span');
  state.className = 'state';
  state.textContent = FOCUS_STATE_LABEL[ev.state] || ev.state;
  const reason = document.createElement('span');
  reason.className = 'reason';
  reason.textContent = FOCUS_REASON_LABEL[ev.reason] || ev.reason;
  li.append(time, ' ', who, ' ', state, ' ', reason);
  if (ev.state === 'regained' && typeof ev.lost_ms === 'number') {
    const away = document.createElement('span');
    away.className = 'lost-for';
    away.textContent = `(자리 비운 시간 / away ${duration(ev.lost_ms)})`;
    li.append(' ', away);
  }
  return li;
}

// Adds one FocusEvent to the feed (newest on top, each event once) and to the tile marks.
function showFocusEvent(ev) {
  if (!ev || typeof ev.participantId !== 'string' || typeof ev.at !== 'number') return;
  showProctorPanel();
  const key = `${ev.participantId}|${ev.at}|${ev.state}|${ev.reason}`;
  if (feedKeys.has(key)) return;
  feedKeys.add(key);
  const feed = $('#focus-feed');
  const li = feedEntry(ev);
  const after = [...feed.children].find((x) => Number(x.dataset.at) <= ev.at);
  feed.insertBefore(li, after || null);
  while (feed.children.length > FOCUS_FEED_MAX) feed.lastElementChild.remove();
  $('#focus-empty').hidden = true;
  const prev = latestFocus.get(ev.participantId);
  if (!prev || prev.at <= ev.at) {
    latestFocus.set(ev.participantId, ev);
    applyFocusMark(ev.participantId);
  }
}

// ---- chat --------------------------------------------------------------------------------

const CHAT_LOG_MAX = 200;
const chatIds = new Set();

// One message in the log (each id once; the join ack's history may repeat after a move).
// `text` comes HTML-escaped from the server (docs/protocol.md, "Chat"), so it is inserted
// as HTML: entities show as the characters the sender typed, markup never runs.
function showMessage(m) {
  if (!m || typeof m.id !== 'string' || chatIds.has(m.id)) return;
  chatIds.add(m.id);
  const li = document.createElement('li');
  li.className = `chat-entry ${m.from && m.from.role === 'proctor' ? 'proctor' : ''}`;
  li.dataset.messageId = m.id;
  li.dataset.from = (m.from && m.from.id) || '';
  const time = document.createElement('time');
  time.dateTime = new Date(m.at).toISOString();
  time.textContent = clock(m.at);
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = `${(m.from && m.from.name) || '?'}${m.from && m.from.role === 'proctor' ? ' (감독관 / Proctor)' : ''}:`;
  const text = document.createElement('span');
  text.className = 'text';
  text.innerHTML = m.text;
  li.append(time, ' ', who, ' ', text);
  const log = $('#chat-log');
  log.appendChild(li);
  while (log.children.length > CHAT_LOG_MAX) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

const CHAT_ERRORS = {
  message_too_long: '메시지가 너무 깁니다 (최대 2000자) / Message too long (up to 2000 characters)',
  rate_limited: '너무 빨리 보내고 있습니다. 잠시 후 다시 / Too fast: wait a moment',
  chat_disabled: '이 방은 채팅이 꺼져 있습니다 / Chat is off in this room',
  bad_request: '빈 메시지는 보낼 수 없습니다 / Cannot send an empty message',
};

function wireChat(room) {
  room.on('message', showMessage);
  room.on('chatHistory', (messages) => { for (const m of messages) showMessage(m); });
  $('#chat-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('#chat-input');
    const text = input.value;
    if (!text.trim()) return;
    try {
      await room.sendMessage(text);
      input.value = '';
    } catch (e) {
      $('#status').textContent = CHAT_ERRORS[e.code] || `오류 / Error: ${e.message}`;
    }
    input.focus();
  });
}

// ---- controls ----------------------------------------------------------------------------

function wireToggle(button, run) {
  button.addEventListener('click', async () => {
    const next = button.getAttribute('aria-pressed') !== 'true';
    button.disabled = true;
    try {
      await run(next);
      button.setAttribute('aria-pressed', String(next));
    } catch (e) {
      setState(document.body.dataset.state, `오류 / Error: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
}

function wireControls(room, canPublish) {
  const mic = $('#btn-mic');
  const cam = $('#btn-cam');
  const screen = $('#btn-screen');
  for (const b of [mic, cam, screen]) b.hidden = !canPublish;
  wireToggle(mic, (muted) => room.setMuted('microphone', muted));
  wireToggle(cam, (muted) => room.setMuted('camera', muted));
  wireToggle(screen, (on) => (on ? room.startScreenShare() : room.stopScreenShare()));
  $('#btn-leave').addEventListener('click', async () => {
    $('#btn-leave').disabled = true;
    await room.leave();
  });
}

// ---- room --------------------------------------------------------------------------------

function wireRoom(room) {
  room.on('participantJoined', (p) => { ensureTile(p); refreshIndicators(room, p.id); });
  room.on('participantLeft', ({ id }) => { const t = tileFor(id); if (t) t.remove(); });
  room.on('trackPublished', (t) => refreshIndicators(room, t.participantId));
  room.on('trackMuted', (m) => refreshIndicators(room, m.participantId));
  room.on('trackUnpublished', (m) => {
    const tile = tileFor(m.participantId);
    if (tile) detach(tile, m.id);
    refreshIndicators(room, m.participantId);
  });
  room.on('remoteTrack', (participantId, trackId, kind, source, track) => {
    const p = room.participants.get(participantId) || { id: participantId };
    attach(mediaElement(ensureTile(p), source), track, trackId);
  });
  room.on('remoteTrackEnded', (participantId, trackId) => {
    const tile = tileFor(participantId);
    if (tile) detach(tile, trackId);
  });
  room.on('activeSpeakers', (speakers) => {
    const loud = new Set(speakers.map((s) => s.id));
    for (const tile of document.querySelectorAll('.tile[data-participant-id]')) {
      const on = loud.has(tile.dataset.participantId);
      tile.classList.toggle('speaking', on);
      tile.dataset.speaking = String(on);
    }
    const me = room.participant && loud.has(room.participant.id);
    $('#local-tile').classList.toggle('speaking', !!me);
  });
  room.on('localTrack', (source, track) => {
    const el = source === 'screen' ? $('#local-screen') : source === 'camera' ? $('#local-video') : null;
    if (el) { el.srcObject = new MediaStream([track]); el.hidden = false; }
  });
  room.on('localTrackEnded', (source) => {
    if (source === 'camera') $('#local-video').srcObject = null;
    if (source !== 'screen') return;
    $('#local-screen').srcObject = null;
    $('#local-screen').hidden = true;
    $('#btn-screen').setAttribute('aria-pressed', 'false');
  });
  room.on('localMuted', setLocalIndicator);
  room.on('focus', showFocusEvent);
  room.on('focusHistory', (events) => { for (const ev of events) showFocusEvent(ev); });
  room.on('error', (e) => { $('#status').textContent = `오류 / Error: ${e.code} ${e.message || ''}`; });
  room.on('reconnecting', () => {
    setState('reconnecting', '다른 서버로 이동 중… / Moving to another server…');
  });
  room.on('resuming', () => setState('reconnecting', '다시 연결 중… / Reconnecting…'));
  room.on('resumed', () => setState('joined', '다시 연결되었습니다 / Reconnected'));
  room.on('migrated', ({ url }) => {
    document.body.dataset.server = url;
    setState('joined', '다른 서버로 이동했습니다 / Moved to another server');
  });
  room.on('disconnected', (reason) => {
    setState('disconnected', `연결이 끊겼습니다 / Disconnected (${reason})`);
  });
  let sentAway = '';
  room.on('roomClosed', ({ reason }) => { sentAway = `방이 닫혔습니다 / The room was closed (${reason || 'closed'})`; });
  room.on('removed', ({ reason }) => { sentAway = `방에서 내보내졌습니다 / You were removed from the room (${reason || 'removed'})`; });
  room.on('left', () => {
    $('#room-view').hidden = true;
    $('#left-view').hidden = false;
    $('#rejoin').href = location.href;
    setState('left', sentAway);
  });
}

async function start(query) {
  const roomName = query.get('room');
  if (!ROOM_RE.test(roomName)) {
    setState('error', '방 이름은 영문, 숫자, _ . - 1~64자입니다 / Room must be 1-64 of A-Z a-z 0-9 _ . -', 'bad_room');
    showForm(query);
    return;
  }
  $('#room-label').textContent = `방 / Room: ${roomName}`;
  const room = new StudyRoom({ videoCodec: query.get('codec') || undefined, simulcast: query.get('simulcast') === '1' });
  window.studyroom = room;
  wireRoom(room);
  wireChat(room);
  setState('connecting', '연결 중… / Connecting…');
  try {
    const token = await fetchToken(query);
    const claims = tokenClaims(token);
    const canPublish = claims.publish !== undefined ? !!claims.publish : claims.role !== 'proctor';
    const proctor = claims.role === 'proctor';
    document.body.dataset.role = proctor ? 'proctor' : 'learner';
    if (proctor) showProctorPanel();
    $('#local-name').textContent = `${query.get('name')} (나 / me)`;
    wireControls(room, canPublish);
    await room.connect(token);
    await room.join();
    document.body.dataset.server = room.url;
    $('#room-view').hidden = false;
    $('#chat-panel').hidden = !room.chat;
    $('#local-tile').hidden = !canPublish;
    if (canPublish) await room.publish({ camera: true, microphone: true });
    if (proctor) setState('joined', '감독관으로 입장했습니다 / Joined as a proctor');
    else setState('joined', canPublish ? '입장했습니다 / Joined' : '청취자로 입장했습니다 / Joined as a listener');
  } catch (e) {
    setState('error', `입장 실패 / Could not join: ${e.message}`, e.code || 'client');
  }
}

const query = new URLSearchParams(location.search);
if (query.get('room') && query.get('name')) start(query);
else showForm(query);
