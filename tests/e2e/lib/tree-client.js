// Serves the demo page's files from this working tree (signaling/web) instead of the copies
// the server binary embedded when it was built.
// Why: the binary embeds signaling/web at build time, so a prebuilt binary (e.g. one copied
// from an earlier build) serves an older client than the tree's. With E2E_CLIENT_FROM_TREE=1
// every page the e2e tests open gets the tree's files, so client changes can be tested
// against that binary. In CI the binary is built from the tree and this stays off.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../signaling/web');

// URL path -> [file in signaling/web, content type]; as signaling/src/http.rs serves them.
// Not index.html: Chromium's Local Network Access checks treat a document fulfilled by the
// test as public and then block its WebSocket to 127.0.0.1, so the page itself stays the
// server's (its script tags load the files below).
const FILES = new Map([
  ['/app.js', ['app.js', 'text/javascript; charset=utf-8']],
  ['/studyroom.js', ['studyroom.js', 'text/javascript; charset=utf-8']],
  ['/sio.js', ['sio.js', 'text/javascript; charset=utf-8']],
  ['/style.css', ['style.css', 'text/css; charset=utf-8']],
  ['/i18n/ko.js', ['i18n/ko.js', 'text/javascript; charset=utf-8']],
  ['/i18n/en.js', ['i18n/en.js', 'text/javascript; charset=utf-8']],
]);

export function clientFromTree() {
  return ['1', 'true', 'yes'].includes(String(process.env.E2E_CLIENT_FROM_TREE || '').toLowerCase());
}

/**
 * Makes `context` answer requests for the demo page's files under `baseUrl` from signaling/web.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} baseUrl  e.g. http://127.0.0.1:5002
 */
export async function serveClientFromTree(context, baseUrl) {
  const origin = new URL(baseUrl).origin;
  await context.route((url) => url.origin === origin && FILES.has(url.pathname), async (route) => {
    const [file, contentType] = FILES.get(new URL(route.request().url()).pathname);
    await route.fulfill({ status: 200, contentType, body: await readFile(path.join(WEB_DIR, file)) });
  });
}
