// Watches a page's Socket.IO frames (namespace /study) to account for subscriber
// renegotiation: every `offer` pushed, every `answer` sent and the ack each answer got.
// Why: "every offer was answered" is a fact of the wire, not of the client's own bookkeeping;
// an answer refused by the server (e.g. payload_too_large) or never sent shows up here.
// Socket.IO v5 over Engine.IO 4: `42/study,["event",data]`, `42/study,17["event",data]`
// (with ack id 17), ack `43/study,17[data]`.

function parse(text) {
  const m = /^4([23])\/study,(\d*)(\[.*)$/s.exec(text);
  if (!m) return null;
  try {
    return { type: m[1] === '2' ? 'event' : 'ack', id: m[2] === '' ? null : Number(m[2]), data: JSON.parse(m[3]) };
  } catch {
    return null;
  }
}

/**
 * Starts watching `page` (call before it loads). Returns a live summary object:
 * { offers, answersSent, answersAcked, answerErrors: [...], maxOfferBytes, maxAnswerBytes,
 *   errorEvents: [...] } (errorEvents: `error` events pushed by the server).
 */
export function trackSignaling(page) {
  const s = { offers: 0, answersSent: 0, answersAcked: 0, answerErrors: [], maxOfferBytes: 0, maxAnswerBytes: 0, errorEvents: [], pendingAnswers: new Set() };
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      const f = parse(String(payload));
      if (!f) return;
      if (f.type === 'event' && f.data[0] === 'offer') {
        s.offers += 1;
        s.maxOfferBytes = Math.max(s.maxOfferBytes, String(f.data[1] && f.data[1].sdp || '').length);
      } else if (f.type === 'event' && f.data[0] === 'error') {
        s.errorEvents.push(f.data[1]);
      } else if (f.type === 'ack' && s.pendingAnswers.has(f.id)) {
        s.pendingAnswers.delete(f.id);
        s.answersAcked += 1;
        const res = f.data[0];
        if (res && res.error) s.answerErrors.push(res.error);
      }
    });
    ws.on('framesent', ({ payload }) => {
      const f = parse(String(payload));
      if (f && f.type === 'event' && f.data[0] === 'answer') {
        s.answersSent += 1;
        s.maxAnswerBytes = Math.max(s.maxAnswerBytes, String(f.data[1] && f.data[1].sdp || '').length);
        if (f.id !== null) s.pendingAnswers.add(f.id);
      }
    });
  });
  return s;
}
