// Join churn: VUs loop connect -> join (ack) -> leave (ack) -> close across many rooms, for
// DURATION. Measures how fast `join` is acked while rooms are constantly created, filled
// and emptied, and whether any Socket.IO operation fails (docs/protocol.md).
//   k6 run --no-usage-report -e VUS=20 -e DURATION=30s -e ROOMS=50 loadtest/k6/join_churn.js
// Env: BASE_URL (http://127.0.0.1:5002), VUS (20), DURATION (30s), ROOMS (50), HOLD_MS (0).
import { sleep } from 'k6';
import { baseUrl, env, envInt } from './lib/sio.js';
import { THRESHOLDS, requireServer, fetchToken, joinAndLeave } from './lib/room.js';

const BASE = baseUrl();
const VUS = envInt('VUS', 20);
const ROOMS = envInt('ROOMS', 50);
const DURATION = env('DURATION', '30s');
const HOLD_MS = Number(env('HOLD_MS', '0'));
if (!Number.isFinite(HOLD_MS) || HOLD_MS < 0) throw new Error(`HOLD_MS must be >= 0, got "${__ENV.HOLD_MS}"`);

export const options = {
  scenarios: {
    churn: { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '20s' },
  },
  thresholds: THRESHOLDS,
};

export function setup() {
  requireServer(BASE);
  // A fresh room prefix per run, so rooms of an earlier run cannot interfere.
  return { run: Date.now().toString(36) };
}

// Tokens are per room; each VU keeps one per room it has visited (its own identity there).
const tokens = {};

export default function (data) {
  const room = `churn-${data.run}-${(__VU * 7 + __ITER) % ROOMS}`;
  if (!tokens[room]) tokens[room] = fetchToken(BASE, room, `vu${__VU}`);
  const r = joinAndLeave(BASE, tokens[room], HOLD_MS);
  if (!r.ok) sleep(0.2); // do not spin on a failing server
}
