// Starts and stops a real `studyroom` server (and, for the operations tests, the Redis and
// NATS it is deployed with) for an end-to-end test file.
// Why: every e2e test runs against the real binary (path from env STUDYROOM_BIN), and when
// a test fails the server's own log is the first thing to read, so we keep it. Draining tests
// also need to signal the server themselves and see how (and when) it exits.
import { spawn } from 'node:child_process';
import { appendFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const DEFAULT_HTTP = '127.0.0.1:5002';
const LOG_LINES_KEPT = 4000;
const running = new Set();
let serverCount = 0;

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Spawns `cmd args` with its output kept, and returns a handle:
 * { pid, logs(), exited(), exitInfo(), signal(sig), waitForExit(timeoutMs), stop() }.
 * `stop()` sends SIGTERM, then SIGKILL after `killAfterMs`.
 */
export function spawnLogged(name, cmd, args, { env = {}, killAfterMs = 5000 } = {}) {
  const lines = [];
  const keep = (stream) => (chunk) => {
    for (const line of String(chunk).split('\n')) {
      if (!line) continue;
      lines.push(`[${stream}] ${line}`);
      if (lines.length > LOG_LINES_KEPT) lines.shift();
    }
  };
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let exitInfo = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(child);
      resolve(exitInfo);
    });
  });
  child.on('error', (e) => {
    lines.push(`[spawn] ${e.message}`);
    if (!exitInfo) { exitInfo = { code: null, signal: null, error: e.message }; running.delete(child); }
  });
  child.stdout.on('data', keep('out'));
  child.stderr.on('data', keep('err'));
  return {
    name,
    pid: child.pid,
    logs: () => lines.join('\n'),
    exited: () => exitInfo !== null,
    exitInfo: () => exitInfo,
    /** Sends `sig` to this process only (by its pid). */
    signal(sig) {
      if (!exitInfo) child.kill(sig);
    },
    /** Resolves with {code, signal} once it exits; rejects after `timeoutMs`. */
    async waitForExit(timeoutMs) {
      if (exitInfo) return exitInfo;
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name} (pid ${child.pid}) still running after ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        return await Promise.race([exitPromise, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    async stop() {
      if (exitInfo) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      await exitPromise;
      clearTimeout(timer);
    },
  };
}

/**
 * Spawns `$STUDYROOM_BIN [--dev] [--http ADDR] [...args]` and waits until GET /healthz is 200.
 * `dev: false` runs it as in production (then give it STUDYROOM_API_SECRET in `env`).
 * The handle adds `baseUrl` to spawnLogged's (signal, waitForExit, exitInfo, ...).
 * @param {{args?: string[], http?: string, env?: object, dev?: boolean, startTimeoutMs?: number}} opts
 */
export async function startServer({ args = [], http = DEFAULT_HTTP, env = {}, dev = true, startTimeoutMs = 20000 } = {}) {
  const httpArgs = http === DEFAULT_HTTP ? [] : ['--http', http];
  // The focus spill file defaults to one per HTTP port in the temporary directory, and a
  // server replays what an earlier one on that port left there (focus events reported as
  // a tab closed while NATS was already stopped). Tests must not inherit each other's
  // backlog, so each server gets its own file unless the test names one (restart tests).
  const spillArgs = [];
  let spill = null;
  if (!args.includes('--focus-spill-path') && !env.STUDYROOM_FOCUS_SPILL_PATH) {
    spill = path.join(os.tmpdir(), `studyroom-e2e-${process.pid}-${++serverCount}.spill`);
    rmSync(spill, { force: true });
    spillArgs.push('--focus-spill-path', spill);
  }
  const proc = spawnLogged(`studyroom ${http}`, studyroomBin(), [...(dev ? ['--dev'] : []), ...httpArgs, ...spillArgs, ...args],
    { env: { RUST_LOG: 'info', ...env } });
  const stop = proc.stop;
  proc.stop = async () => {
    await stop();
    if (spill) rmSync(spill, { force: true });
    // E2E_SERVER_LOG=path keeps the server's log (debugging a run: with STUDYROOM_LOG
    // set to e.g. sfu::core::datapath=trace).
    if (process.env.E2E_SERVER_LOG) appendFileSync(process.env.E2E_SERVER_LOG, proc.logs());
  };
  // A server listening on every address is reached on loopback.
  const baseUrl = `http://${http.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`;
  const server = { ...proc, baseUrl };

  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (proc.exited()) {
      throw new Error(`studyroom exited during startup (${JSON.stringify(proc.exitInfo())}):\n${proc.logs()}`);
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`);
      if (res.status === 200) return server;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`studyroom did not answer ${baseUrl}/healthz within ${startTimeoutMs} ms:\n${proc.logs()}`);
    }
    await sleep(100);
  }
}

// Sends `line` to 127.0.0.1:port and resolves with what comes back first (or rejects).
function tcpExchange(port, line, timeoutMs = 1000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('timeout')); }, timeoutMs);
    sock.on('connect', () => { if (line) sock.write(line); });
    sock.once('data', (d) => { clearTimeout(timer); sock.destroy(); resolve(String(d)); });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

async function waitUntilAnswers(proc, port, line, expect, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = 'nothing';
  for (;;) {
    if (proc.exited()) throw new Error(`${proc.name} exited at startup (${JSON.stringify(proc.exitInfo())}):\n${proc.logs()}`);
    try {
      last = await tcpExchange(port, line);
      if (expect.test(last)) return;
    } catch (e) { last = e.message; }
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`${proc.name} not ready on 127.0.0.1:${port} within ${timeoutMs} ms (last: ${last}):\n${proc.logs()}`);
    }
    await sleep(100);
  }
}

/** `redis-server` on 127.0.0.1:port, in memory only; resolves once it answers PING. */
export async function startRedis({ port = 16379, timeoutMs = 10000 } = {}) {
  const proc = spawnLogged(`redis-server :${port}`, 'redis-server',
    ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no']);
  await waitUntilAnswers(proc, port, 'PING\r\n', /^\+PONG/, timeoutMs);
  return { ...proc, url: `redis://127.0.0.1:${port}` };
}

/** `nats-server` with JetStream stored in `storeDir`; resolves once it greets with INFO. */
export async function startNats({ port = 14222, storeDir, timeoutMs = 10000 } = {}) {
  if (!storeDir) throw new Error('startNats: storeDir (a fresh directory for JetStream) is required');
  const proc = spawnLogged(`nats-server :${port}`, 'nats-server',
    ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir]);
  await waitUntilAnswers(proc, port, '', /^INFO /, timeoutMs);
  return { ...proc, url: `nats://127.0.0.1:${port}` };
}
