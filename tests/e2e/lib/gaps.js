// A video gap monitor that lives in each participant page: every ~100 ms it reads the
// subscriber PC's getStats() and notes, per remote participant (camera), when its decoded
// frame count last grew. A gap is the time between two growths (or, while frozen, from the
// last growth until now).
// Why: "the room did not notice" a departure means every survivor keeps decoding every other
// survivor; the longest gap per remote participant over a step is what users see as a
// freeze, and the same records give the recovery figures for BENCHMARKS.md (last frame of a
// participant before a reload/outage, first frame after).
// Install with openParticipant(..., {initScripts: [gapMonitor]}) so it survives reloads.
// Timestamps are Date.now() (same clock as the test process on this machine).

/** The in-page monitor (an init script: runs before the page's own scripts). */
export function gapMonitor() {
  if (window.__gaps) return;
  const POLL_MS = 100;
  const EPISODE_MS = 300; // gaps at least this long are kept as episodes
  const byPid = new Map(); // participantId -> { frames, firstAt, lastAt, maxGap, maxGapEnd, windowStart }
  const episodes = []; // { pid, start, end, ms }
  let windowStart = Date.now();
  let polls = 0;
  let maxPollMs = 0;
  async function poll() {
    const started = Date.now();
    try {
      const room = window.studyroom;
      const pc = room && room.subscriberPc;
      if (pc && pc.signalingState !== 'closed') {
        const report = await pc.getStats();
        const now = Date.now();
        const byMid = room.remoteByMid || new Map();
        // A recycled mid may still carry the stats of its earlier SSRC: sum per participant,
        // count growth only.
        const sums = new Map();
        report.forEach((r) => {
          if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
          const info = byMid.get(r.mid);
          if (!info || !info.participantId || (info.source && info.source !== 'camera')) return;
          sums.set(info.participantId, (sums.get(info.participantId) || 0) + (r.framesDecoded || 0));
        });
        for (const [pid, frames] of sums) {
          let s = byPid.get(pid);
          if (!s) {
            s = { frames, firstAt: null, lastAt: null, maxGap: 0, maxGapEnd: null };
            byPid.set(pid, s);
            continue; // the baseline; the first growth after it is the first frame seen
          }
          if (frames > s.frames) {
            if (s.lastAt !== null) {
              const gap = now - s.lastAt; // a gap that began before reset() counts whole
              if (gap > s.maxGap) { s.maxGap = gap; s.maxGapEnd = now; }
              if (now - s.lastAt >= EPISODE_MS) {
                episodes.push({ pid, start: s.lastAt, end: now, ms: now - s.lastAt });
                if (episodes.length > 500) episodes.shift();
              }
            }
            if (s.firstAt === null) s.firstAt = now;
            s.lastAt = now;
          }
          s.frames = frames;
        }
      }
    } catch { /* a PC closing under us: next poll */ }
    polls += 1;
    maxPollMs = Math.max(maxPollMs, Date.now() - started);
    setTimeout(poll, POLL_MS);
  }
  setTimeout(poll, POLL_MS);
  window.__gaps = {
    /** Starts a new measuring window: max gaps restart (a gap ending after this counts whole). */
    reset() {
      windowStart = Date.now();
      for (const s of byPid.values()) { s.maxGap = 0; s.maxGapEnd = null; }
      maxPollMs = 0;
    },
    /** Per participant: the longest gap in this window, including a freeze going on now. */
    report() {
      const now = Date.now();
      const out = {};
      for (const [pid, s] of byPid) {
        const current = s.lastAt === null ? null : now - s.lastAt;
        out[pid] = { frames: s.frames, firstAt: s.firstAt, lastAt: s.lastAt, maxGap: s.maxGap, maxGapEnd: s.maxGapEnd,
          currentGap: current, worst: Math.max(s.maxGap, current ?? 0) };
      }
      return { at: now, windowStart, polls, maxPollMs, byPid: out };
    },
    episodes: () => episodes.slice(),
  };
}

/** Starts a new gap window in each page. */
export async function resetGaps(participants) {
  await Promise.all(participants.map((p) => p.page.evaluate(() => window.__gaps && window.__gaps.reset())));
}

/** The page's gap report (see gapMonitor's report()). */
export async function gapReport(page) {
  return page.evaluate(() => (window.__gaps ? window.__gaps.report() : null));
}

/** The page's gap episodes (>= 300 ms): [{pid, start, end, ms}]. */
export async function gapEpisodes(page) {
  return page.evaluate(() => (window.__gaps ? window.__gaps.episodes() : []));
}

/**
 * For each survivor, the worst gap (ms) in this window in the video of each other survivor:
 * [{ at, from, worst, frames }] sorted worst first. A survivor whose monitor has never seen
 * a remote participant reports worst = Infinity for it.
 */
export async function survivorGaps(survivors) {
  const rows = [];
  for (const p of survivors) {
    const rep = await gapReport(p.page);
    for (const o of survivors) {
      if (o === p) continue;
      const s = rep && rep.byPid[o.id];
      rows.push({ at: p.name, from: `${o.name}(${o.id})`, worst: s ? s.worst : Infinity, frames: s ? s.frames : 0,
        maxPollMs: rep ? rep.maxPollMs : null });
    }
  }
  return rows.sort((a, b) => b.worst - a.worst);
}
