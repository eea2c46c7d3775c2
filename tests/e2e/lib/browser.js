// Headless Chromium for the e2e tests: launch with fake media, open the demo page as a
// participant, and remember every page's console so a failing test can print it.
// Every RTCPeerConnection a page creates is collected in `window.__pcs` (init script), so
// tests read getStats() of the PCs the page really uses, whatever the app does.
import { chromium } from 'playwright-core';
import { clientFromTree, serveClientFromTree } from './tree-client.js';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const CHROMIUM_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  // <audio> elements play without a user gesture, as they would after a click on "join".
  '--autoplay-policy=no-user-gesture-required',
  // Several pages share two cores: keep background pages' timers and rendering running.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

// Runs in every page before its scripts: collect each RTCPeerConnection.
function collectPeerConnections() {
  const Original = window.RTCPeerConnection;
  window.__pcs = [];
  class CollectedRTCPeerConnection extends Original {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  }
  window.RTCPeerConnection = CollectedRTCPeerConnection;
}

/**
 * Readies a browser context for participant pages: collects their peer connections and,
 * with E2E_CLIENT_FROM_TREE=1, serves the client files from the tree. Once per context.
 */
export async function prepareContext(context, baseUrl) {
  if (clientFromTree()) await serveClientFromTree(context, baseUrl);
  await context.addInitScript(collectPeerConnections);
}

/** Headless Chromium with CHROMIUM_FLAGS plus `extraArgs` (e.g. fakeCameraArgs()). */
export async function launchBrowser({ extraArgs = [] } = {}) {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_FLAGS, ...extraArgs] });
}

/**
 * A Chromium in its own process group (playwright launches it detached), connected over its
 * WebSocket endpoint, for tests that kill a whole browser: `kill()` sends SIGKILL to the
 * group (the browser and its renderer, GPU and network processes), so nothing closes
 * cleanly (no WebSocket close frame, no DTLS close_notify; the kernel still closes its TCP
 * sockets). Returns { browser, pid, kill(), close() }.
 */
export async function launchKillableBrowser({ extraArgs = [] } = {}) {
  const server = await chromium.launchServer({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_FLAGS, ...extraArgs] });
  const pid = server.process().pid;
  const browser = await chromium.connect(server.wsEndpoint());
  let killed = false;
  return {
    browser,
    pid,
    kill() {
      if (killed) return;
      killed = true;
      try { process.kill(-pid, 'SIGKILL'); } catch { /* already gone */ }
    },
    async close() {
      if (!killed) await browser.close().catch(() => {});
      await server.close().catch(() => {});
    },
  };
}

/**
 * Opens `/?room=..&name=..` in a fresh browser context (or as a new page of `context`, one
 * readied with prepareContext) and waits until the page says joined (body[data-state=joined]).
 * Returns a participant handle; its close() closes what it opened.
 * @param {import('playwright-core').Browser} browser
 * @param {string} baseUrl  e.g. http://127.0.0.1:5002
 * `query` adds page parameters (e.g. {codec: 'VP9'}). With E2E_CLIENT_FROM_TREE=1 the page's
 * files come from signaling/web instead of the binary (see tree-client.js).
 * @param {{room: string, name: string, role?: string, publish?: boolean, loss?: number,
 *   query?: Record<string, string>, joinTimeoutMs?: number,
 *   context?: import('playwright-core').BrowserContext, initScripts?: Function[],
 *   onPage?: (page: import('playwright-core').Page) => void}} opts
 * `initScripts` run in every document of a new context before its scripts (they survive
 * reloads), e.g. the video gap monitor of gaps.js; `onPage` sees the page before it loads
 * (e.g. to watch its WebSocket, see sigtrack.js).
 */
export async function openParticipant(browser, baseUrl, { room, name, role, publish, loss, query = {}, joinTimeoutMs = 20000, context: shared = null, initScripts = [], onPage = null }) {
  const context = shared || await browser.newContext();
  if (!shared) {
    await prepareContext(context, baseUrl);
    for (const script of initScripts) await context.addInitScript(script);
  }
  const page = await context.newPage();
  if (onPage) onPage(page);
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`[${name} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[${name} pageerror] ${e.stack || e.message}`));
  // Signaling frames (Socket.IO over WebSocket), without pings, so a failure shows the exchange.
  page.on('websocket', (ws) => {
    const log = (dir) => ({ payload }) => {
      const text = String(payload).replace(/"(token|resumeToken)":"[^"]*"/g, '"$1":"<redacted>"');
      if (text === '2' || text === '3') return;
      consoleLines.push(`[${name} ws ${dir} ${new Date().toISOString().slice(11, 23)}] ${text.slice(0, 300)}`);
    };
    ws.on('framesent', log('>>'));
    ws.on('framereceived', log('<<'));
  });
  const q = new URLSearchParams({ room, name });
  if (role) q.set('role', role);
  if (publish === false) q.set('publish', '0');
  if (loss !== undefined) q.set('loss', String(loss));
  for (const [key, value] of Object.entries(query)) q.set(key, String(value));
  await page.goto(`${baseUrl}/?${q}`);
  try {
    await page.waitForFunction(() => ['joined', 'error'].includes(document.body.dataset.state), null,
      { timeout: joinTimeoutMs });
  } catch (e) {
    const state = await page.evaluate(() => [document.body.dataset.state, document.querySelector('#status')?.textContent]);
    throw new Error(`${name} did not join within ${joinTimeoutMs} ms (state ${state[0]}: ${state[1]})\n${consoleLines.join('\n')}`);
  }
  const [state, status] = await page.evaluate(() => [document.body.dataset.state, document.querySelector('#status').textContent]);
  if (state !== 'joined') throw new Error(`${name} failed to join: ${status}\n${consoleLines.join('\n')}`);
  const id = await page.evaluate(() => window.studyroom.participant.id);
  return {
    name, id, page, context, consoleLines,
    async close() { await (shared ? page.close() : context.close()).catch(() => {}); },
  };
}
