//! Entry points for the fuzz targets (`fuzz/`): the pure first step of every
//! request a client or the platform can send, callable without a server.
//!
//! Why a public module: cargo-fuzz builds a separate crate against this library, and the
//! parse-and-check functions are crate-private (the handlers are their only users). These
//! wrappers run exactly the code the handlers run before they touch any state, so what the
//! fuzzer finds is what a socket could reach. Not a stable API.

use serde_json::Value;

use crate::handlers::{
    object, parse_answer, parse_focus, parse_focus_history, parse_ice, parse_mute, parse_publish,
    parse_quality, parse_track_view, parse_unpublish,
};

/// The Socket.IO request events of `/study` whose payloads are parsed (docs/protocol.md).
pub const EVENTS: &[&str] = &[
    "join",
    "resume",
    "publish",
    "answer",
    "restartIce",
    "ice",
    "mute",
    "unpublish",
    "setQuality",
    "trackView",
    "focus",
    "focusHistory",
];

/// Parses and checks `payload` as the handler of `event` does (an unknown event is
/// refused, as by the fallback handler). A valid focus report also goes through the focus
/// state machine and its NATS outbox (as a learner's would), with time passed in.
/// Returns whether the payload was accepted. Must never panic.
pub fn socketio_event(event: &str, payload: Option<Value>) -> bool {
    match event {
        "join" | "restartIce" => object(payload).is_ok(),
        "resume" => crate::resume::parse_resume(payload).is_ok(),
        "publish" => parse_publish(payload).is_ok(),
        "answer" => parse_answer(payload).is_ok(),
        "ice" => parse_ice(payload).is_ok(),
        "mute" => parse_mute(payload).is_ok(),
        "unpublish" => parse_unpublish(payload).is_ok(),
        "setQuality" => parse_quality(payload).is_ok(),
        "trackView" => parse_track_view(payload).is_ok(),
        "focusHistory" => parse_focus_history(payload).is_ok(),
        "focus" => match parse_focus(payload) {
            Ok((lost, reason, client_at)) => {
                let f = crate::focus::Focus::new(4, None);
                let now = std::time::Instant::now();
                for i in 0..3u64 {
                    if let Ok(ev) = f.report(
                        "room",
                        "P1",
                        "identity",
                        "Name",
                        lost ^ (i % 2 == 1),
                        &reason,
                        client_at,
                        1_700_000_000_000 + i,
                        now,
                    ) {
                        f.enqueue(ev);
                    }
                }
                let _ = f.history("room", Some("P1"));
                true
            }
            Err(_) => false,
        },
        _ => false,
    }
}

/// Parses and checks a platform command (NATS subject suffix `command`, `body`) as the
/// command service does before acting. Returns whether it was accepted.
pub fn nats_command(command: &str, body: &[u8]) -> bool {
    crate::commands::parse_checked(command, body).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The inputs that once mattered or could: valid payloads pass, hostile ones are refused
    /// without a panic (the fuzz targets run the same functions with generated inputs).
    #[test]
    fn valid_payloads_pass_and_hostile_ones_are_refused() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let ok = [
            ("join", None),
            (
                "publish",
                Some(json!({"sdp": sdp, "tracks": [{"mid": "0", "source": "camera"}]})),
            ),
            ("answer", Some(json!({"sdp": sdp}))),
            (
                "ice",
                Some(json!({"target": "publisher", "candidate": null})),
            ),
            ("mute", Some(json!({"trackId": "TR1", "muted": true}))),
            (
                "setQuality",
                Some(json!({"participantId": "P2", "source": "camera", "quality": "low"})),
            ),
            (
                "focus",
                Some(json!({"state": "lost", "reason": "hidden", "at": 1.7e12})),
            ),
            ("focusHistory", Some(json!({}))),
            ("resume", Some(json!({"resumeToken": "abc"}))),
            (
                "trackView",
                Some(
                    json!({"views": [{"trackId": "TR3", "visible": true, "width": 640, "height": 360}]}),
                ),
            ),
        ];
        for (event, payload) in ok {
            assert!(
                socketio_event(event, payload.clone()),
                "{event} {payload:?}"
            );
        }
        // As deep as socketioxide's JSON parser (serde_json, recursion limit 128) lets through.
        let deep: Value =
            serde_json::from_str(&format!("{}{}", "[".repeat(120), "]".repeat(120))).unwrap();
        assert!(serde_json::from_str::<Value>(&"[".repeat(10_000)).is_err());
        let hostile = [
            (
                "publish",
                Some(json!({"sdp": "x".repeat(2 << 20), "tracks": []})),
            ),
            (
                "publish",
                Some(json!({"sdp": sdp, "tracks": [{"mid": "é".repeat(40), "source": "camera"}]})),
            ),
            (
                "ice",
                Some(json!({"target": "publisher", "candidate": {"candidate": "a".repeat(2000)}})),
            ),
            (
                "mute",
                Some(json!({"trackId": "TR99999999999999999999999", "muted": true})),
            ),
            (
                "focus",
                Some(json!({"state": "lost", "reason": "😀", "at": -1})),
            ),
            ("focus", Some(json!({"state": "lost", "at": "now"}))),
            (
                "setQuality",
                Some(json!({"participantId": "P-1", "source": "camera", "quality": "low"})),
            ),
            ("resume", Some(json!({"resumeToken": 5}))),
            (
                "trackView",
                Some(
                    json!({"views": [{"trackId": "TR3", "visible": true, "width": 1e9, "height": 1}]}),
                ),
            ),
            ("join", Some(json!([1, 2]))),
            ("publish", Some(deep)),
            ("nope", None),
        ];
        for (event, payload) in hostile {
            assert!(!socketio_event(event, payload), "{event} accepted");
        }
        // A valid-looking focus with a huge or non-finite client time is accepted, the time dropped.
        assert!(socketio_event(
            "focus",
            Some(json!({"state": "regained", "at": 1e300}))
        ));
    }

    #[test]
    fn commands_are_parsed_and_checked() {
        assert!(nats_command("rooms.list", b""));
        assert!(nats_command("room.close", br#"{"room":"exam-1"}"#));
        assert!(!nats_command("room.close", br#"{"room":"a b"}"#));
        assert!(!nats_command("room.close", br#"{"room":"exam-1","x":1}"#));
        assert!(!nats_command("track.mute", &[0xff, 0xfe]));
        assert!(!nats_command("no.such", b"{}"));
        assert!(!nats_command("room.close", &vec![b' '; 1 << 20]));
    }
}
