// Starts and stops a real `studyroom --dev` server for an end-to-end test file.
// Why: every e2e test runs against the real binary (path from env STUDYROOM_BIN), and when
// a test fails the server's own log is the first thing to read, so we keep it.
import { spawn } from 'node:child_process';

const DEFAULT_HTTP = '127.0.0.1:5002';
const LOG_LINES_KEPT = 4000;
const running = new Set();

// A test runner that dies must not leave servers holding the ports.
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

export function studyroomBin() {
  const bin = process.env.STUDYROOM_BIN;
  if (!bin) throw new Error('STUDYROOM_BIN is not set: point it at the studyroom binary (e.g. target/release/studyroom)');
  return bin;
}

/**
 * Spawns `$STUDYROOM_BIN --dev [--http ADDR] [...args]` and waits until GET /healthz is 200.
 * @param {{args?: string[], http?: string, env?: object, startTimeoutMs?: number}} opts
 * @returns {Promise<{baseUrl: string, logs: () => string, stop: () => Promise<void>, exited: () => boolean}>}
 */
export async function startServer({ args = [], http = DEFAULT_HTTP, env = {}, startTimeoutMs = 20000 } = {}) {
  const bin = studyroomBin();
  const lines = [];
  const keep = (stream) => (chunk) => {
    for (const line of String(chunk).split('\n')) {
      if (!line) continue;
      lines.push(`[${stream}] ${line}`);
      if (lines.length > LOG_LINES_KEPT) lines.shift();
    }
  };
  const httpArgs = http === DEFAULT_HTTP ? [] : ['--http', http];
  const child = spawn(bin, ['--dev', ...httpArgs, ...args], {
    env: { RUST_LOG: 'info', ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let exitInfo = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(child);
      resolve();
    });
  });
  child.on('error', (e) => lines.push(`[spawn] ${e.message}`));
  child.stdout.on('data', keep('out'));
  child.stderr.on('data', keep('err'));

  const baseUrl = `http://${http}`;
  const server = {
    baseUrl,
    logs: () => lines.join('\n'),
    exited: () => exitInfo !== null,
    async stop() {
      if (exitInfo) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exitPromise;
      clearTimeout(timer);
    },
  };

  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (exitInfo) {
      throw new Error(`studyroom exited during startup (${JSON.stringify(exitInfo)}):\n${server.logs()}`);
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`);
      if (res.status === 200) return server;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`studyroom did not answer ${baseUrl}/healthz within ${startTimeoutMs} ms:\n${server.logs()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
