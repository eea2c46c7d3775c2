// Reading a JetStream stream back in tests (focus events, lifecycle events): every
// message, oldest first, with the dedup id the server set.

/** Every message of `stream`, oldest first: { seq, subject, msgId, payload }. */
export async function streamMessages(jsm, stream) {
  const info = await jsm.streams.info(stream);
  const out = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    out.push({ seq: m.seq, subject: m.subject, msgId: m.header ? m.header.get('Nats-Msg-Id') : null, payload: m.json() });
  }
  return out;
}
