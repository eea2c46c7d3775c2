// A headless Chromium whose pages really become hidden and visible again, for the
// proctoring tests (a learner switching away from the exam tab).
// Why: Playwright turns on DevTools focus emulation for every page it creates, and that
// emulation also keeps the page "visible": in a normal Playwright context switching tabs
// never fires `visibilitychange` (nor does minimizing the window, or setWebLifecycleState).
// So this browser is launched by us with a DevTools port and attached with
// `connectOverCDP({ noDefaults: true })`, which leaves its default context as the browser
// has it. There a page is a tab of one window: opening another tab in front of it hides it
// (blur, then visibilitychange 'hidden', as for a user), bringing it to front shows it again.
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { chromium } from 'playwright-core';
import { CHROMIUM_FLAGS, CHROMIUM_PATH, prepareContext } from './browser.js';
import { spawnLogged } from './server.js';
import { waitFor } from './stats.js';

const DEVTOOLS_RE = /DevTools listening on (ws:\/\/\S+)/;

/**
 * Launches the browser; `context` is where participant pages go (openParticipant's
 * `context` option). hide(page) / show(page) switch tabs and wait for the page to say so.
 * @param {string} baseUrl  the studyroom server the pages will load (for prepareContext)
 */
export async function launchVisibilityBrowser(baseUrl, { startTimeoutMs = 20000 } = {}) {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'studyroom-visibility-'));
  const proc = spawnLogged('chromium (real visibility)', CHROMIUM_PATH, [
    '--headless', ...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-port=0', 'about:blank',
  ]);
  let browser = null;
  const cleanup = async () => {
    if (browser) await browser.close().catch(() => {});
    await proc.stop();
    // Chromium's helper processes may still write to the profile for a moment.
    await rm(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 })
      .catch((e) => console.warn(`visibility browser: could not remove ${profile}: ${e.message}`));
  };
  try {
    const endpoint = await waitFor(() => {
      if (proc.exited()) throw new Error(`chromium exited: ${JSON.stringify(proc.exitInfo())}\n${proc.logs()}`);
      const m = proc.logs().match(DEVTOOLS_RE);
      return m && m[1];
    }, { what: 'chromium to print its DevTools endpoint', timeoutMs: startTimeoutMs, intervalMs: 100,
      progress: () => proc.logs().slice(-2000) });
    browser = await chromium.connectOverCDP(endpoint, { noDefaults: true });
    const context = browser.contexts()[0];
    await prepareContext(context, baseUrl);
    const covers = new Map(); // page -> the tab opened in front of it
    const visibility = (page) => page.evaluate(() => document.visibilityState);
    return {
      browser,
      context,
      /** Opens a tab in front of `page` and waits until `page` is hidden. */
      async hide(page) {
        const cover = await context.newPage();
        covers.set(page, cover);
        await cover.bringToFront();
        await waitFor(async () => (await visibility(page)) === 'hidden',
          { what: 'the page to become hidden behind another tab', timeoutMs: 10000, progress: () => visibility(page) });
      },
      /** Brings `page` back to front, waits until it is visible, then closes the cover tab. */
      async show(page) {
        await page.bringToFront();
        await waitFor(async () => (await visibility(page)) === 'visible',
          { what: 'the page to become visible again', timeoutMs: 10000, progress: () => visibility(page) });
        const cover = covers.get(page);
        covers.delete(page);
        if (cover) await cover.close();
      },
      close: cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
