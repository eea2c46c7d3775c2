//! Engine.IO 4 / Socket.IO 5 text frames, decoded: the part of the client that reads
//! what the server (or anything on the wire) sends. Why a file of its own: it depends on
//! nothing else in the crate (serde_json, thiserror), so the fuzz target
//! (`fuzz/fuzz_targets/sio_frame.rs`) compiles it as it is.

use serde_json::Value;

/// What went wrong talking Socket.IO.
#[derive(Debug, thiserror::Error)]
pub enum SioError {
    /// The WebSocket could not be opened or broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The server refused the namespace connection (`connect_error`); the message is the
    /// protocol's error code (e.g. `invalid_token`).
    #[error("connect_error: {0}")]
    Refused(String),
    /// The server spoke something we do not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No acknowledgement in time.
    #[error("timeout waiting for the ack of {0}")]
    Timeout(String),
    /// The connection closed before the ack arrived.
    #[error("connection closed")]
    Closed,
}

/// One decoded Socket.IO packet of our namespace (or an Engine.IO control frame).
#[derive(Debug, PartialEq)]
pub enum Packet {
    /// Engine.IO open (`0{...}`): ping interval + timeout in ms.
    Open {
        ping_interval: u64,
        ping_timeout: u64,
    },
    /// Engine.IO ping (`2`).
    Ping,
    /// Engine.IO close (`1`).
    Close,
    /// Socket.IO CONNECT acknowledged.
    Connected,
    /// Socket.IO CONNECT_ERROR with its message.
    ConnectError(String),
    /// Socket.IO DISCONNECT of the namespace.
    Disconnect,
    /// An event, with the ack id the sender wants back.
    Event {
        /// Event name.
        name: String,
        /// First argument (`null` when none).
        data: Value,
        /// Ack id.
        ack: Option<u64>,
    },
    /// An acknowledgement for our request `id`.
    Ack {
        /// Request id.
        id: u64,
        /// First argument of the ack (`null` when none).
        data: Value,
    },
    /// Anything else (other namespaces, noop, pong): ignored.
    Other,
}

/// Decode one WebSocket text frame for namespace `ns` (e.g. `/study`).
pub fn parse_packet(ns: &str, text: &str) -> Result<Packet, SioError> {
    let bad = |why: &str| SioError::Protocol(format!("{why}: {}", preview(text)));
    let mut chars = text.chars();
    match chars.next() {
        Some('0') => {
            let v: Value = serde_json::from_str(&text[1..]).map_err(|_| bad("bad open"))?;
            Ok(Packet::Open {
                ping_interval: v["pingInterval"].as_u64().unwrap_or(25_000),
                ping_timeout: v["pingTimeout"].as_u64().unwrap_or(20_000),
            })
        }
        Some('1') => Ok(Packet::Close),
        Some('2') => Ok(Packet::Ping),
        Some('4') => {
            let rest = &text[1..];
            let kind = rest.chars().next().ok_or_else(|| bad("empty message"))?;
            let mut body = &rest[kind.len_utf8()..];
            // Namespace: "/study," prefix unless it is the main namespace.
            if body.starts_with('/') {
                let (n, after) = match body.find(',') {
                    Some(i) => (&body[..i], &body[i + 1..]),
                    None => (body, ""),
                };
                if n != ns {
                    return Ok(Packet::Other);
                }
                body = after;
            } else if ns != "/" {
                return Ok(Packet::Other);
            }
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            let id: Option<u64> = if digits > 0 {
                Some(body[..digits].parse().map_err(|_| bad("bad ack id"))?)
            } else {
                None
            };
            let payload = &body[digits..];
            match kind {
                '0' => Ok(Packet::Connected),
                '1' => Ok(Packet::Disconnect),
                '4' => {
                    let v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
                    let msg = v["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| payload.to_owned());
                    Ok(Packet::ConnectError(msg))
                }
                '2' => {
                    let v: Value = serde_json::from_str(payload).map_err(|_| bad("bad event"))?;
                    let arr = v.as_array().ok_or_else(|| bad("event is not an array"))?;
                    let name = arr
                        .first()
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("event without a name"))?;
                    Ok(Packet::Event {
                        name: name.to_owned(),
                        data: arr.get(1).cloned().unwrap_or(Value::Null),
                        ack: id,
                    })
                }
                '3' => {
                    let id = id.ok_or_else(|| bad("ack without id"))?;
                    let v: Value = serde_json::from_str(payload).map_err(|_| bad("bad ack"))?;
                    let data = v
                        .as_array()
                        .and_then(|a| a.first().cloned())
                        .unwrap_or(Value::Null);
                    Ok(Packet::Ack { id, data })
                }
                '5' | '6' => Err(bad("binary packets are not supported")),
                _ => Err(bad("unknown socket.io packet type")),
            }
        }
        _ => Ok(Packet::Other),
    }
}

fn preview(s: &str) -> String {
    s.chars().take(80).collect()
}
