//! A small Socket.IO v5 client (Engine.IO v4, WebSocket transport only) for the load
//! generator: connect to a namespace with an `auth` object, emit events with or without
//! an acknowledgement (awaited as a future), receive pushed events on a channel.
//!
//! Why our own and not `rust_socketio` (0.6, the only maintained-looking crate): its
//! async client pulls `reqwest` + `native-tls` (OpenSSL) in, starts every connection with
//! HTTP long-polling before upgrading, and delivers acks to callbacks instead of futures,
//! so "send `join`, await its ack, measure" would need a channel per request anyway.
//! The subset we need is the one `signaling/web/sio.js` and the k6 scripts already
//! speak, over `tokio-tungstenite` which the workspace already builds:
//!
//! ```text
//! server  0{"sid",..,"pingInterval","pingTimeout"}    Engine.IO open
//! client  40/study,{"token":..}                        Socket.IO CONNECT with auth
//! server  40/study,{"sid":..} | 44/study,{"message"}  connected | connect_error
//! server  2  -> client 3                               ping / pong
//! either  42/study,["event",payload]                   event
//! client  42/study,<id>["event",payload] -> 43/study,<id>[result]   event with ack
//! ```
//!
//! Binary attachments (`45`/`46`) are not part of our protocol and are refused.
//! [`parse_packet`] is pure (`sio/frame.rs`, no dependency on the rest of the crate) so it
//! is unit-tested on its own and fuzzed (`fuzz/`, target `sio_frame`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

mod frame;
pub use frame::{Packet, SioError, parse_packet};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A connected Socket.IO client. Dropping it closes the connection.
pub struct SioClient {
    ns: String,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: u64,
    task: tokio::task::JoinHandle<()>,
}

/// A pushed event: name and first argument. `None` ends the stream (disconnected).
pub type PushedEvent = (String, Value);

impl SioClient {
    /// Open `ws://…/socket.io/?EIO=4&transport=websocket` at `base` (an http:// URL) and
    /// connect namespace `ns` with `auth`. Pushed events arrive on the returned receiver;
    /// it closes when the connection ends.
    pub async fn connect(
        base: &str,
        ns: &str,
        auth: &Value,
        timeout: Duration,
    ) -> Result<(SioClient, mpsc::UnboundedReceiver<PushedEvent>), SioError> {
        let url = ws_url(base);
        let hp = crate::token::host_port(base).map_err(|e| SioError::Transport(e.to_string()))?;
        // TCP_NODELAY as browsers do: without it Nagle holds the tail of a large request
        // (an SDP offer) until the server's delayed ACK, adding ~40 ms to acks.
        let open = async {
            let tcp = tokio::net::TcpStream::connect(&hp)
                .await
                .map_err(|e| SioError::Transport(format!("connect {hp}: {e}")))?;
            tcp.set_nodelay(true)
                .map_err(|e| SioError::Transport(e.to_string()))?;
            tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .map_err(|e| SioError::Transport(e.to_string()))
        };
        let (ws, _) = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| SioError::Timeout("websocket connect".into()))??;
        let (mut sink, mut stream) = ws.split();
        // Engine.IO open, then our CONNECT, then the namespace's answer.
        let handshake = async {
            let mut ping_deadline = Duration::from_secs(45);
            let mut sent_connect = false;
            loop {
                let msg = stream
                    .next()
                    .await
                    .ok_or(SioError::Closed)?
                    .map_err(|e| SioError::Transport(e.to_string()))?;
                let Message::Text(t) = msg else { continue };
                match parse_packet(ns, t.as_str())? {
                    Packet::Open {
                        ping_interval,
                        ping_timeout,
                    } => {
                        ping_deadline = Duration::from_millis(ping_interval + ping_timeout);
                        let connect = format!("40{ns},{auth}");
                        sink.send(Message::text(connect))
                            .await
                            .map_err(|e| SioError::Transport(e.to_string()))?;
                        sent_connect = true;
                    }
                    Packet::Ping => {
                        sink.send(Message::text("3"))
                            .await
                            .map_err(|e| SioError::Transport(e.to_string()))?;
                    }
                    Packet::Connected if sent_connect => return Ok(ping_deadline),
                    Packet::ConnectError(m) => return Err(SioError::Refused(m)),
                    Packet::Close | Packet::Disconnect => return Err(SioError::Closed),
                    _ => {}
                }
            }
        };
        let ping_deadline = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| SioError::Timeout("socket.io connect".into()))??;

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel::<PushedEvent>();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let pending2 = pending.clone();
        let out2 = out_tx.clone();
        let ns2 = ns.to_owned();
        let task = tokio::spawn(async move {
            let writer = async {
                while let Some(m) = out_rx.recv().await {
                    let close = matches!(m, Message::Close(_));
                    if sink.send(m).await.is_err() || close {
                        break;
                    }
                }
            };
            let reader = async {
                loop {
                    let next = tokio::time::timeout(ping_deadline, stream.next()).await;
                    let Ok(Some(Ok(msg))) = next else { break };
                    let Message::Text(t) = msg else {
                        if matches!(msg, Message::Close(_)) {
                            break;
                        }
                        continue;
                    };
                    match parse_packet(&ns2, t.as_str()) {
                        Ok(Packet::Ping) => {
                            let _ = out2.send(Message::text("3"));
                        }
                        Ok(Packet::Event { name, data, .. }) => {
                            let _ = ev_tx.send((name, data));
                        }
                        Ok(Packet::Ack { id, data }) => {
                            let tx = pending2.lock().expect("pending lock").remove(&id);
                            if let Some(tx) = tx {
                                let _ = tx.send(data);
                            }
                        }
                        Ok(Packet::Close | Packet::Disconnect) => break,
                        Ok(_) => {}
                        Err(e) => {
                            let _ = ev_tx.send(("_protocol_error".into(), e.to_string().into()));
                        }
                    }
                }
            };
            tokio::select! {
                _ = writer => {}
                _ = reader => {}
            }
            // Wake every waiter: their acks will never come.
            pending2.lock().expect("pending lock").clear();
        });
        Ok((
            SioClient {
                ns: ns.to_owned(),
                out: out_tx,
                pending,
                next_id: 0,
                task,
            },
            ev_rx,
        ))
    }

    /// Emit `event` and await its acknowledgement's first argument.
    pub async fn request(
        &mut self,
        event: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<Value, SioError> {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let frame = format!(
            "42{},{id}{}",
            self.ns,
            Value::Array(vec![event.into(), data.clone()])
        );
        if self.out.send(Message::text(frame)).is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(SioError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(SioError::Closed),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(SioError::Timeout(event.into()))
            }
        }
    }

    /// Close the WebSocket (the server sees a transport close).
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        self.close();
        // The task ends when the socket closes; abort in case the peer never answers.
        let task = self.task.abort_handle();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            task.abort();
        });
    }
}

/// `http://host:port[/]` -> `ws://host:port/socket.io/?EIO=4&transport=websocket`
/// (only plain http/ws is connected; TLS is not built in).
pub fn ws_url(base: &str) -> String {
    let b = base.trim_end_matches('/');
    let b = if let Some(r) = b.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = b.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        b.to_owned()
    };
    format!("{b}/socket.io/?EIO=4&transport=websocket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_frames_we_meet() {
        assert_eq!(
            parse_packet(
                "/study",
                r#"0{"sid":"x","pingInterval":100,"pingTimeout":50}"#
            )
            .unwrap(),
            Packet::Open {
                ping_interval: 100,
                ping_timeout: 50
            }
        );
        assert_eq!(parse_packet("/study", "2").unwrap(), Packet::Ping);
        assert_eq!(
            parse_packet("/study", r#"40/study,{"sid":"a"}"#).unwrap(),
            Packet::Connected
        );
        assert_eq!(
            parse_packet("/study", r#"44/study,{"message":"invalid_token"}"#).unwrap(),
            Packet::ConnectError("invalid_token".into())
        );
        assert_eq!(
            parse_packet("/study", r#"42/study,["offer",{"sdp":"v=0"}]"#).unwrap(),
            Packet::Event {
                name: "offer".into(),
                data: json!({"sdp": "v=0"}),
                ack: None
            }
        );
        assert_eq!(
            parse_packet("/study", r#"43/study,17[{"ok":true}]"#).unwrap(),
            Packet::Ack {
                id: 17,
                data: json!({"ok": true})
            }
        );
        // Another namespace is not ours.
        assert_eq!(
            parse_packet("/study", r#"42/other,["x",1]"#).unwrap(),
            Packet::Other
        );
        assert_eq!(
            parse_packet("/study", r#"42["x",1]"#).unwrap(),
            Packet::Other
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            "4",
            "42/study,",
            "42/study,[",
            "42/study,{}",
            "43/study,[1]",
            "45/study,1-[]",
            "0{",
            "49/study,[]",
            "42/study,[1]",
        ] {
            assert!(
                parse_packet("/study", bad).is_err(),
                "{bad} should be refused"
            );
        }
        // Unknown Engine.IO types are ignored, not fatal.
        assert_eq!(parse_packet("/study", "6").unwrap(), Packet::Other);
        assert_eq!(parse_packet("/study", "").unwrap(), Packet::Other);
    }

    #[test]
    fn random_frames_never_panic() {
        // A cheap stand-in for a fuzz target (this crate is a binary): random frames from
        // an alphabet of the characters that matter, including multi-byte ones.
        let alphabet: Vec<char> = "0123456789/,[]{}\"study:é€ -".chars().collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..24);
            let mut t: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            if rng.bool() {
                t.insert_str(0, "42/study,");
            }
            let _ = parse_packet("/study", &t);
        }
    }

    #[test]
    fn builds_the_websocket_url() {
        assert_eq!(
            ws_url("http://127.0.0.1:5002"),
            "ws://127.0.0.1:5002/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            ws_url("https://a.example/"),
            "wss://a.example/socket.io/?EIO=4&transport=websocket"
        );
    }
}
