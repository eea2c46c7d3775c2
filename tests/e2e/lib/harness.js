// One e2e test's world: a studyroom server, one headless Chromium, and the participants
// (one browser context each). `h.run(fn)` prints everything useful when fn fails: the
// server's log, each page's console, PC states and the client's recent room events.
// Set E2E_LOG_DIR=DIR to keep every test's full server log and diagnostics, pass or fail.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startServer } from './server.js';
import { launchBrowser, openParticipant } from './browser.js';

const SERVER_LOG_TAIL = 400;

/**
 * @param {import('node:test').TestContext} t  the harness is closed in t.after()
 * @param {{serverArgs?: string[], browserArgs?: string[]}} opts  `browserArgs`: extra Chromium flags
 */
export async function startHarness(t, { serverArgs = [], browserArgs = [] } = {}) {
  const server = await startServer({ args: serverArgs });
  let browser;
  try {
    browser = await launchBrowser({ extraArgs: browserArgs });
  } catch (e) {
    await server.stop();
    throw e;
  }
  const participants = [];
  const h = {
    server,
    browser,
    participants,
    /**
     * Opens the demo page as a participant (see openParticipant) and waits for it to join;
     * `opts.browser` opens it in another browser than the harness's own.
     */
    async join({ browser: other = null, ...opts }) {
      const p = await openParticipant(other || browser, server.baseUrl, opts);
      participants.push(p);
      return p;
    },
    /** Runs the test body; on failure prints diagnostics, then rethrows. */
    async run(fn) {
      try {
        return await fn();
      } catch (e) {
        console.error(await h.diagnostics());
        throw e;
      }
    },
    /** Writes the full server log and the diagnostics to DIR/<test name>.log (opt-in: E2E_LOG_DIR). */
    async saveLogs(dir) {
      const file = path.join(dir, `${t.name.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80)}.log`);
      await mkdir(dir, { recursive: true });
      await writeFile(file, `${server.logs()}\n${await h.diagnostics()}\n`);
    },
    async diagnostics() {
      const parts = [`==== server log (last ${SERVER_LOG_TAIL} lines)`,
        server.logs().split('\n').slice(-SERVER_LOG_TAIL).join('\n')];
      for (const p of participants) {
        parts.push(`==== ${p.name} (${p.id})`);
        parts.push(p.consoleLines.slice(-100).join('\n'));
        const state = await p.page.evaluate(() => ({
          bodyState: document.body.dataset.state,
          status: document.querySelector('#status')?.textContent,
          pcs: (window.__pcs || []).map((pc) => ({
            signaling: pc.signalingState, ice: pc.iceConnectionState, connection: pc.connectionState,
            mids: pc.getTransceivers().map((tr) => `${tr.mid}:${tr.currentDirection}`),
          })),
          events: (window.studyroom?.eventLog || []).slice(-40)
            .map((e) => `${new Date(e.at).toISOString().slice(11, 23)} ${e.event} ${JSON.stringify(e.data).slice(0, 300)}`),
        })).catch((err) => ({ unavailable: err.message }));
        parts.push(JSON.stringify(state, null, 2));
      }
      return parts.join('\n');
    },
    async close() {
      if (process.env.E2E_LOG_DIR) await h.saveLogs(process.env.E2E_LOG_DIR);
      for (const p of participants) await p.close();
      await browser.close().catch(() => {});
      await server.stop();
    },
  };
  t.after(() => h.close());
  return h;
}
