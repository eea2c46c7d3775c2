//! Every `/study` request event's payload parsing and checks (`signaling::fuzzing`) with
//! arbitrary JSON: errors, never panics. The first byte picks the event; the rest is the
//! payload: JSON text when it parses (so the fuzzer can grow real documents), else a value
//! built from the bytes (any type, deep nesting, long strings, unicode, big numbers).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use signaling::fuzzing::{EVENTS, socketio_event};

/// A JSON value from bytes: each byte decides the next node's type.
fn build(b: &mut &[u8], depth: usize) -> Value {
    let Some((&t, rest)) = b.split_first() else {
        return Value::Null;
    };
    *b = rest;
    let take = |b: &mut &[u8], n: usize| -> Vec<u8> {
        let n = n.min(b.len());
        let (h, t) = b.split_at(n);
        *b = t;
        h.to_vec()
    };
    match t % 9 {
        0 => Value::Null,
        1 => Value::Bool(t & 0x80 != 0),
        2 => {
            let x = take(b, 8);
            let mut a = [0u8; 8];
            a[..x.len()].copy_from_slice(&x);
            Value::Number(Number::from(i64::from_le_bytes(a)))
        }
        3 => {
            let x = take(b, 8);
            let mut a = [0u8; 8];
            a[..x.len()].copy_from_slice(&x);
            Number::from_f64(f64::from_le_bytes(a)).map_or(Value::Null, Value::Number)
        }
        4 | 5 => {
            let n = (t as usize >> 3) * 3;
            Value::String(String::from_utf8_lossy(&take(b, n)).into_owned())
        }
        6 => Value::String("x".repeat((t as usize) << 8)),
        7 if depth < 64 => Value::Array((0..t % 5).map(|_| build(b, depth + 1)).collect()),
        _ if depth < 64 => {
            let keys = [
                "sdp",
                "tracks",
                "mid",
                "source",
                "muted",
                "target",
                "candidate",
                "trackId",
                "participantId",
                "quality",
                "state",
                "reason",
                "at",
                "resumeToken",
                "",
            ];
            let mut m = Map::new();
            for _ in 0..t % 6 {
                let k = b.first().copied().unwrap_or(0) as usize;
                let v = build(b, depth + 1);
                m.insert(keys[k % keys.len()].to_owned(), v);
            }
            Value::Object(m)
        }
        _ => Value::Null,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&e, mut rest)) = data.split_first() else {
        return;
    };
    let event = EVENTS
        .get(e as usize % (EVENTS.len() + 1))
        .copied()
        .unwrap_or("no-such-event");
    let payload = match serde_json::from_slice::<Value>(rest) {
        Ok(v) => Some(v),
        Err(_) if rest.is_empty() => None,
        Err(_) => Some(build(&mut rest, 0)),
    };
    let _ = socketio_event(event, payload);
});
