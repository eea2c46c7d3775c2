// app.js — the demo page's UI on top of studyroom.js.
//
// `/?room=ROOM&name=NAME[&role=learner|proctor][&publish=0][&loss=N][&codec=VP8|VP9|H264|AV1]`
// `[&simulcast=1][&adaptive=0][&dtx=1]` fetches a dev token from `/dev/token` (room, name, role,
// publish, loss, chat passed through) and joins at once, with camera and mic unless the token
// does not grant publishing; `codec` forces the camera's video codec (StudyRoom's
// `videoCodec`), `simulcast=1` sends the camera as three layers, `adaptive=0` turns adaptive
// stream off (StudyRoom's `adaptiveStream`), `dtx=1` asks for Opus DTX (StudyRoom's `dtx`).
// Without room and name it shows the join form.
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
// Languages (WCAG 2.2 AA, issue 16): every label shows Korean and English side by side, the
// page's language first ("마이크 끄기 / Mute mic"), the other one in a span with its own
// `lang`. The page's language is <html lang>, which the server sets from `?lang=ko|en` or
// Accept-Language (Korean by default); the header's link switches. Strings live in
// i18n/ko.js and i18n/en.js, one file per language with the same keys. Screen readers hear
// joins and leaves (and, for proctors, focus losses) from #announcer, a polite live region.

import { StudyRoom } from './studyroom.js';
import ko from './i18n/ko.js';
import en from './i18n/en.js';

const $ = (sel, root = document) => root.querySelector(sel);
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const FOCUS_FEED_MAX = 500;

// ---- languages ---------------------------------------------------------------------------

const STRINGS = { ko, en };
const LANG = document.documentElement.lang === 'en' ? 'en' : 'ko';
const OTHER = LANG === 'ko' ? 'en' : 'ko';
const ROLE_KEY = { learner: 'learner', proctor: 'proctor' };
const FOCUS_STATE_KEY = { lost: 'focusLost', regained: 'focusBack' };
const FOCUS_REASON_KEY = {
  hidden: 'reasonHidden',
  visible: 'reasonVisible',
  blur: 'reasonBlur',
  focus: 'reasonFocus',
  'fullscreen-exit': 'reasonFullscreenExit',
  'fullscreen-enter': 'reasonFullscreenEnter',
};

function fill(text, vars = {}) {
  return text.replace(/\{(\w+)\}/g, (all, k) => (k in vars ? String(vars[k]) : all));
}

// One language's text; `vars` values may be per-language ({ko, en}) or plain.
function say(lang, key, vars = {}) {
  const v = Object.fromEntries(Object.entries(vars).map(([k, x]) => [k, x && typeof x === 'object' ? x[lang] : x]));
  return fill(STRINGS[lang][key] ?? key, v);
}

/** Both languages as plain text, the page's first (aria-label, option text, title). */
function both(key, vars) {
  return `${say(LANG, key, vars)} / ${say(OTHER, key, vars)}`;
}

/** Nodes for both languages: the page's text, then " / other" marked with its `lang`. */
function bilingual(key, vars) {
  const other = document.createElement('span');
  other.lang = OTHER;
  other.textContent = `/ ${say(OTHER, key, vars)}`;
  return [say(LANG, key, vars), ' ', other];
}

function label(el, key, vars) {
  el.replaceChildren(...bilingual(key, vars));
}

// The static page: labels, accessible names, title, and the language switch.
function applyLanguage() {
  for (const el of document.querySelectorAll('[data-i18n]')) label(el, el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-aria]')) el.setAttribute('aria-label', both(el.dataset.i18nAria));
  for (const el of document.querySelectorAll('[data-i18n-text]')) el.textContent = both(el.dataset.i18nText);
  document.title = both('title');
  const link = $('#lang-switch');
  const url = new URL(location.href);
  url.searchParams.set('lang', OTHER);
  link.href = `${url.pathname}${url.search}`;
  link.lang = OTHER;
  link.hreflang = OTHER;
  link.textContent = STRINGS[OTHER].languageName;
}

/** Reads `key` out politely (joins, leaves, focus alerts). */
function announce(key, vars) {
  const p = document.createElement('p');
  p.append(...bilingual(key, vars));
  const box = $('#announcer');
  box.append(p);
  while (box.children.length > 20) box.firstElementChild.remove();
}

// `key` (with `vars`) is the status text in both languages; '' clears it.
function setState(state, key = '', vars = {}, errorCode = '') {
  document.body.dataset.state = state;
  if (errorCode) document.body.dataset.error = errorCode;
  if (key) label($('#status'), key, vars);
  else $('#status').textContent = '';
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
  if (!res.ok) throw Object.assign(new Error(`${both('tokenFailed', { status: res.status })}: ${body}`), { code: 'token_request' });
  const json = JSON.parse(body);
  if (typeof json.token !== 'string') throw Object.assign(new Error(both('tokenBad')), { code: 'token_request' });
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
    params.set('lang', LANG);
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
      if (ROLE_KEY[p.role]) label($('.role', tile), ROLE_KEY[p.role]);
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
      <span class="ind mic-off" hidden></span>
      <span class="ind cam-off" hidden></span>
      <span class="ind away" hidden></span>
      <span class="ind video-paused" hidden></span>
    </div>`;
  $('.name', tile).textContent = p.name || p.identity || p.id;
  if (ROLE_KEY[p.role]) label($('.role', tile), ROLE_KEY[p.role]);
  label($('.mic-off', tile), 'micOff');
  label($('.cam-off', tile), 'camOff');
  label($('.away', tile), 'away');
  label($('.video-paused', tile), 'videoPaused');
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
  panel.tabIndex = 0; // scrolls: reachable by keyboard
  panel.innerHTML = `
    <h2 id="proctor-title"></h2>
    <p id="focus-empty"></p>
    <ol id="focus-feed" aria-live="polite" aria-relevant="additions"></ol>`;
  label($('#proctor-title', panel), 'focusTitle');
  label($('#focus-empty', panel), 'focusEmpty');
  $('#focus-feed', panel).setAttribute('aria-label', both('focusFeed'));
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

// A duration in each language: {ko, en}.
function duration(ms) {
  const s = ms / 1000;
  const per = (key, vars) => ({ ko: say('ko', key, vars), en: say('en', key, vars) });
  if (s < 60) return per('seconds', { s: s.toFixed(1) });
  const m = Math.floor(s / 60);
  return per('minutes', { m, s: Math.round(s - m * 60) });
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
  if (FOCUS_STATE_KEY[ev.state]) label(state, FOCUS_STATE_KEY[ev.state]);
  else state.textContent = ev.state;
  const reason = document.createElement('span');
  reason.className = 'reason';
  if (FOCUS_REASON_KEY[ev.reason]) label(reason, FOCUS_REASON_KEY[ev.reason]);
  else reason.textContent = ev.reason;
  li.append(time, ' ', who, ' ', state, ' ', reason);
  if (ev.state === 'regained' && typeof ev.lost_ms === 'number') {
    const away = document.createElement('span');
    away.className = 'lost-for';
    away.append('(', ...bilingual('awayFor', { duration: duration(ev.lost_ms) }), ')');
    li.append(' ', away);
  }
  return li;
}

// Adds one FocusEvent to the feed (newest on top, each event once) and to the tile marks;
// `live` for a push (not history): a loss is announced.
function showFocusEvent(ev, live = false) {
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
  // A live loss is also announced (the feed itself is a polite live region too).
  if (live && ev.state === 'lost') {
    const reasonKey = FOCUS_REASON_KEY[ev.reason];
    announce('announceFocusLost', {
      name: ev.name || ev.participant || ev.participantId,
      reason: reasonKey ? { ko: say('ko', reasonKey), en: say('en', reasonKey) } : ev.reason,
    });
  }
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
  who.textContent = `${(m.from && m.from.name) || '?'}${m.from && m.from.role === 'proctor' ? ` ${both('fromProctor')}` : ''}:`;
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
  message_too_long: 'chatTooLong',
  rate_limited: 'chatTooFast',
  chat_disabled: 'chatOff',
  bad_request: 'chatEmpty',
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
      if (CHAT_ERRORS[e.code]) label($('#status'), CHAT_ERRORS[e.code]);
      else label($('#status'), 'error', { message: e.message });
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
      setState(document.body.dataset.state, 'error', { message: e.message });
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
  room.on('participantJoined', (p) => {
    const known = !!tileFor(p.id) && !!$('.name', tileFor(p.id)).textContent;
    ensureTile(p);
    refreshIndicators(room, p.id);
    if (!known && joinedAt) announce('announceJoined', { name: p.name || p.identity || p.id });
  });
  room.on('participantLeft', ({ id, reason }) => {
    const t = tileFor(id);
    if (!t) return;
    // A move to another node announces everyone gone and back: not news for a listener.
    if (reason !== 'reconnecting') announce('announceLeft', { name: $('.name', t).textContent || id });
    t.remove();
  });
  room.on('trackPublished', (t) => refreshIndicators(room, t.participantId));
  room.on('trackMuted', (m) => refreshIndicators(room, m.participantId));
  // The server paused a video because this downlink cannot carry it: say so on the tile.
  const videoPaused = (paused) => ({ participantId }) => {
    const t = participantId && tileFor(participantId);
    if (!t) return;
    if (paused) t.dataset.videoPaused = 'bandwidth'; else delete t.dataset.videoPaused;
    $('.ind.video-paused', t).hidden = !paused;
  };
  room.on('videoPaused', videoPaused(true));
  room.on('videoResumed', videoPaused(false));
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
  room.on('focus', (ev) => showFocusEvent(ev, true));
  room.on('focusHistory', (events) => { for (const ev of events) showFocusEvent(ev); });
  room.on('error', (e) => label($('#status'), 'error', { message: `${e.code} ${e.message || ''}` }));
  room.on('reconnecting', () => setState('reconnecting', 'moving'));
  room.on('resuming', () => setState('reconnecting', 'reconnecting'));
  room.on('resumed', () => setState('joined', 'reconnected'));
  room.on('migrated', ({ url }) => {
    document.body.dataset.server = url;
    setState('joined', 'moved');
  });
  room.on('disconnected', (reason) => setState('disconnected', 'disconnected', { reason }));
  let sentAway = null;
  room.on('roomClosed', ({ reason }) => { sentAway = ['roomClosed', { reason: reason || 'closed' }]; });
  room.on('removed', ({ reason }) => { sentAway = ['removed', { reason: reason || 'removed' }]; });
  room.on('left', () => {
    $('#room-view').hidden = true;
    $('#left-view').hidden = false;
    $('#rejoin').href = location.href;
    if (sentAway) setState('left', ...sentAway);
    else setState('left');
  });
}

async function start(query) {
  const roomName = query.get('room');
  if (!ROOM_RE.test(roomName)) {
    setState('error', 'badRoom', {}, 'bad_room');
    showForm(query);
    return;
  }
  label($('#room-label'), 'room', { room: roomName });
  const room = new StudyRoom({
    videoCodec: query.get('codec') || undefined,
    simulcast: query.get('simulcast') === '1',
    adaptiveStream: query.get('adaptive') !== '0',
    dtx: query.get('dtx') === '1',
  });
  window.studyroom = room;
  wireRoom(room);
  wireChat(room);
  setState('connecting', 'connecting');
  try {
    const token = await fetchToken(query);
    const claims = tokenClaims(token);
    const canPublish = claims.publish !== undefined ? !!claims.publish : claims.role !== 'proctor';
    const proctor = claims.role === 'proctor';
    document.body.dataset.role = proctor ? 'proctor' : 'learner';
    if (proctor) showProctorPanel();
    $('#local-name').textContent = `${query.get('name')} ${both('meSuffix')}`;
    wireControls(room, canPublish);
    await room.connect(token);
    await room.join();
    joinedAt = Date.now();
    document.body.dataset.server = room.url;
    $('#room-view').hidden = false;
    $('#chat-panel').hidden = !room.chat;
    $('#local-tile').hidden = !canPublish;
    if (canPublish) await room.publish({ camera: true, microphone: true });
    if (proctor) setState('joined', 'joinedProctor');
    else setState('joined', canPublish ? 'joined' : 'joinedListener');
  } catch (e) {
    setState('error', 'joinFailed', { message: e.message }, e.code || 'client');
  }
}

// Set once our own join is through: participants listed by the join ack are not announced
// one by one, later arrivals are.
let joinedAt = 0;

applyLanguage();
const query = new URLSearchParams(location.search);
if (query.get('room') && query.get('name')) start(query);
else showForm(query);
