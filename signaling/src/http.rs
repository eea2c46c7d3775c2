//! HTTP routes: the demo page (embedded at build time), health, and `--dev` tokens.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Claims, RoleClaim, unix_now, valid_room};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STUDYROOM_JS: &str = include_str!("../web/studyroom.js");
const SIO_JS: &str = include_str!("../web/sio.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// The HTTP router (Socket.IO is layered on by the caller).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/studyroom.js",
            get(|| async { page("text/javascript; charset=utf-8", STUDYROOM_JS) }),
        )
        .route(
            "/sio.js",
            get(|| async { page("text/javascript; charset=utf-8", SIO_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/dev/token", get(dev_token))
        .route("/api/rooms/{room}/focus", get(focus_log))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        "ready".into_response()
    }
}

fn page(ctype: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    room: Option<String>,
    name: Option<String>,
    role: Option<String>,
    identity: Option<String>,
    publish: Option<String>,
    subscribe: Option<String>,
    chat: Option<String>,
    /// Seconds until expiry (negative: already expired, for tests).
    ttl: Option<i64>,
    /// Test impairment: percent of media datagrams dropped towards this participant.
    loss: Option<f32>,
}

fn flag(v: &Option<String>) -> Option<bool> {
    v.as_deref().map(|s| !matches!(s, "0" | "false" | "no"))
}

async fn dev_token(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    let err = |code: StatusCode, c: &str, m: &str| {
        (code, Json(json!({"error": {"code": c, "message": m}}))).into_response()
    };
    if !state.dev() {
        return err(
            StatusCode::NOT_FOUND,
            "not_found",
            "dev tokens exist only with --dev",
        );
    }
    let room = q.room.unwrap_or_else(|| "lobby".into());
    if !valid_room(&room) {
        return err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "room: 1-64 chars of A-Z a-z 0-9 _ . -",
        );
    }
    let name: String = q
        .name
        .unwrap_or_else(|| "guest".into())
        .chars()
        .take(64)
        .collect();
    let role = match q.role.as_deref() {
        None | Some("learner") => RoleClaim::Learner,
        Some("proctor") => RoleClaim::Proctor,
        Some(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "role: learner or proctor",
            );
        }
    };
    let identity = q.identity.unwrap_or_else(|| {
        format!(
            "{}-{:08x}",
            name.replace(|c: char| !c.is_alphanumeric(), ""),
            fastrand::u32(..)
        )
    });
    let ttl = q.ttl.unwrap_or(6 * 3600).clamp(-86_400, 7 * 86_400);
    let exp = (unix_now() as i64 + ttl).max(0) as u64;
    let claims = Claims {
        sub: identity.clone(),
        name,
        room: room.clone(),
        role,
        exp,
        publish: flag(&q.publish),
        subscribe: flag(&q.subscribe),
        chat: flag(&q.chat),
        impair_loss: q.loss.map(|l| (l / 100.0).clamp(0.0, 0.9)),
    };
    Json(json!({ "token": state.keys().sign(&claims), "room": room, "identity": identity }))
        .into_response()
}

#[derive(Deserialize)]
struct FocusQuery {
    participant: Option<String>,
}

/// A participant's focus log for the session (proctors of that room only).
async fn focus_log(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<FocusQuery>,
    headers: HeaderMap,
) -> Response {
    let err = |code: StatusCode, c: &str, m: &str| {
        (code, Json(json!({"error": {"code": c, "message": m}}))).into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let claims = match state.keys().verify(token) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(code = e.code(), "focus log: token refused");
            return err(
                StatusCode::UNAUTHORIZED,
                e.code(),
                "a valid proctor token is required",
            );
        }
    };
    if claims.role != RoleClaim::Proctor || claims.room != room {
        tracing::warn!(identity = %claims.sub, role = claims.role.as_str(), "focus log: forbidden");
        return err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a proctor of this room may read its focus log",
        );
    }
    let events = state.focus().history(&room, q.participant.as_deref());
    Json(json!({ "room": room, "participant": q.participant, "events": events })).into_response()
}
