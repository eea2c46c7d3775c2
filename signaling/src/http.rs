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
const I18N_KO_JS: &str = include_str!("../web/i18n/ko.js");
const I18N_EN_JS: &str = include_str!("../web/i18n/en.js");

/// Languages of the demo page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Ko,
    En,
}

impl Lang {
    fn tag(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }
}

/// The page's language: `?lang=ko|en` wins; else the first of Korean or English by
/// Accept-Language preference (q-values, then order); else Korean (the platform's users).
fn page_lang(query: Option<&str>, accept: Option<&str>) -> Lang {
    match query {
        Some("en") => return Lang::En,
        Some("ko") => return Lang::Ko,
        _ => {}
    }
    let mut best: Option<(f32, Lang)> = None;
    for item in accept.unwrap_or("").split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = match tag.split('-').next() {
            Some("ko") => Lang::Ko,
            Some("en") => Lang::En,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::Ko, |(_, l)| l)
}

#[derive(Deserialize)]
struct PageQuery {
    lang: Option<String>,
}

/// The demo page with `<html lang>` set to the negotiated language (app.js reads it).
async fn index(Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let lang = page_lang(q.lang.as_deref(), accept);
    let body = INDEX_HTML.replacen(
        "<html lang=\"ko\">",
        &format!("<html lang=\"{}\">", lang.tag()),
        1,
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "Accept-Language"),
        ],
        body,
    )
        .into_response()
}

/// The HTTP router (Socket.IO is layered on by the caller).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/i18n/ko.js",
            get(|| async { page("text/javascript; charset=utf-8", I18N_KO_JS) }),
        )
        .route(
            "/i18n/en.js",
            get(|| async { page("text/javascript; charset=utf-8", I18N_EN_JS) }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_language_follows_the_query_then_accept_language() {
        assert_eq!(page_lang(Some("en"), Some("ko-KR")), Lang::En);
        assert_eq!(page_lang(Some("ko"), Some("en-US")), Lang::Ko);
        assert_eq!(page_lang(Some("fr"), Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(
            page_lang(None, Some("ko-KR,ko;q=0.9,en-US;q=0.8")),
            Lang::Ko
        );
        assert_eq!(page_lang(None, Some("fr-FR,en;q=0.5,ko;q=0.7")), Lang::Ko);
        assert_eq!(page_lang(None, Some("ja, en-GB;q=0.3")), Lang::En);
        assert_eq!(page_lang(None, Some("en;q=0, ko;q=0.1")), Lang::Ko);
        assert_eq!(page_lang(None, Some("fr")), Lang::Ko, "default");
        assert_eq!(page_lang(None, None), Lang::Ko);
        assert!(
            INDEX_HTML.contains("<html lang=\"ko\">"),
            "the tag index() rewrites"
        );
    }
}
