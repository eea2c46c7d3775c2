// Join storm: VUS participants connect and join at the same instant (a lecture starting),
// stay until HOLD_MS after that instant, then all leave together. Measures `join` ack latency
// under a burst, failed operations, and whether every participant learned of everyone else
// in its room (`room_view_complete`; exact only when every join is acked before the common
// leave time, i.e. join_ack_ms max + storm_start_skew_ms max < HOLD_MS).
//   k6 run --no-usage-report -e VUS=200 -e ROOMS=1 loadtest/k6/join_storm.js
// Env: BASE_URL (http://127.0.0.1:5002), VUS (200), ROOMS (1), HOLD_MS (5000),
//      START_DELAY_MS (2000: set-up time before the common start), MAX_ROOM (500, the
//      server's default --max-room-size), DURATION (max run time, 2m).
import { sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { baseUrl, env, envInt } from './lib/sio.js';
import { THRESHOLDS, requireServer, fetchTokens, joinAndLeave } from './lib/room.js';

const BASE = baseUrl();
const VUS = envInt('VUS', 200);
const ROOMS = envInt('ROOMS', 1);
const HOLD_MS = envInt('HOLD_MS', 5000);
const START_DELAY_MS = envInt('START_DELAY_MS', 2000);
const MAX_ROOM = envInt('MAX_ROOM', 500);
if (Math.ceil(VUS / ROOMS) > MAX_ROOM) {
  throw new Error(`VUS/ROOMS = ${Math.ceil(VUS / ROOMS)} participants per room exceeds MAX_ROOM=${MAX_ROOM}; raise ROOMS`);
}

// How late each VU started its connect relative to the common start (ms): shows the burst is real.
const startSkew = new Trend('storm_start_skew_ms', true);
// Per participant: did it learn of every other participant of its room before leaving?
const viewComplete = new Rate('room_view_complete');
// Common start -> join ack (ms): start skew + connect + join, i.e. how long until the
// participant is in the room. Compares servers whose connect and join costs differ: a
// server that connects everyone faster faces a sharper burst of joins.
const joinedAfterStart = new Trend('storm_joined_ms', true);

export const options = {
  scenarios: {
    storm: { executor: 'per-vu-iterations', vus: VUS, iterations: 1, maxDuration: env('DURATION', '2m') },
  },
  setupTimeout: '180s',
  thresholds: THRESHOLDS,
};

const roomOf = (i) => i % ROOMS; // VU i (0-based) -> room index

export function setup() {
  requireServer(BASE);
  const run = Date.now().toString(36);
  const specs = [];
  for (let i = 0; i < VUS; i++) specs.push({ room: `storm-${run}-${roomOf(i)}`, name: `p${i}` });
  const tokens = fetchTokens(BASE, specs);
  const sizes = new Array(ROOMS).fill(0);
  for (let i = 0; i < VUS; i++) sizes[roomOf(i)]++;
  return { tokens, sizes, startAt: Date.now() + START_DELAY_MS };
}

export default function (data) {
  const i = __VU - 1;
  const wait = data.startAt - Date.now();
  if (wait > 0) sleep(wait / 1000);
  startSkew.add(Math.max(0, Date.now() - data.startAt));
  const leaveAt = data.startAt + HOLD_MS;
  const r = joinAndLeave(BASE, data.tokens[i], HOLD_MS, { leaveAt });
  if (r.ackedAt > 0) joinedAfterStart.add(r.ackedAt - data.startAt);
  // Only a participant that was in the room before the common leave time can judge its view.
  if (r.ok && r.ackedAt < leaveAt) viewComplete.add(r.others === data.sizes[roomOf(i)] - 1);
}
