//! Tokens: JWT HS256 with the claims of `docs/protocol.md`. Verification maps every
//! failure to one protocol code; the reason is logged, never echoed with the token.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Largest token we look at.
const MAX_TOKEN_BYTES: usize = 4096;

/// A participant's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleClaim {
    /// A learner.
    Learner,
    /// A proctor.
    Proctor,
}

impl RoleClaim {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleClaim::Learner => "learner",
            RoleClaim::Proctor => "proctor",
        }
    }
}

/// Token claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Identity.
    pub sub: String,
    /// Display name.
    pub name: String,
    /// The only room this token may join.
    pub room: String,
    /// Role.
    pub role: RoleClaim,
    /// Expiry (s since epoch).
    pub exp: u64,
    /// Publish grant (default: learners yes, proctors no).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// Subscribe grant (default yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<bool>,
    /// Chat grant (default yes): `false` turns room chat off for this participant (it
    /// neither sends nor receives messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
    /// Test-only: fraction of media datagrams to drop towards this participant (honoured
    /// only when the server runs with `--allow-impairment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair_loss: Option<f32>,
}

impl Claims {
    /// Effective publish grant.
    pub fn can_publish(&self) -> bool {
        self.publish.unwrap_or(self.role == RoleClaim::Learner)
    }
    /// Effective subscribe grant.
    pub fn can_subscribe(&self) -> bool {
        self.subscribe.unwrap_or(true)
    }
    /// Effective chat grant.
    pub fn can_chat(&self) -> bool {
        self.chat.unwrap_or(true)
    }
}

/// Why a token was refused; `code()` is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the handshake.
    #[error("missing_token")]
    Missing,
    /// Malformed, wrong signature, wrong claims.
    #[error("invalid_token")]
    Invalid(String),
    /// Past its `exp`.
    #[error("token_expired")]
    Expired,
}

impl AuthError {
    /// Protocol code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Expired => "token_expired",
        }
    }
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    enc: EncodingKey,
    dec: DecodingKey,
}

impl TokenKeys {
    /// Keys from the API secret.
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
        }
    }

    /// Verify a token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too long".into()));
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.dec, &v).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let c = data.claims;
        if !valid_room(&c.room) {
            return Err(AuthError::Invalid("bad room claim".into()));
        }
        if c.sub.is_empty() || c.sub.len() > 128 || c.name.len() > 128 {
            return Err(AuthError::Invalid("bad sub/name claim".into()));
        }
        Ok(c)
    }

    /// Sign claims.
    pub fn sign(&self, claims: &Claims) -> String {
        // Invariant: HS256 signing of a serialisable struct cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.enc)
            .expect("HS256 signing")
    }
}

/// Room names: 1-64 chars of `[A-Za-z0-9_.-]`.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 64
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            name: "Alice".into(),
            room: "r1".into(),
            role: RoleClaim::Learner,
            exp,
            publish: None,
            subscribe: None,
            chat: None,
            impair_loss: None,
        }
    }

    #[test]
    fn verify_accepts_good_and_refuses_bad() {
        let k = TokenKeys::new(b"s3cret");
        let t = k.sign(&claims(unix_now() + 60));
        let c = k.verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.can_publish() && c.can_subscribe());
        assert_eq!(k.verify(""), Err(AuthError::Missing));
        assert_eq!(
            k.verify(&k.sign(&claims(unix_now() - 60))),
            Err(AuthError::Expired)
        );
        assert_eq!(k.verify("garbage").unwrap_err().code(), "invalid_token");
        let other = TokenKeys::new(b"other").sign(&claims(unix_now() + 60));
        assert_eq!(k.verify(&other).unwrap_err().code(), "invalid_token");
        let mut bad_room = claims(unix_now() + 60);
        bad_room.room = "../x".into();
        assert_eq!(
            k.verify(&k.sign(&bad_room)).unwrap_err().code(),
            "invalid_token"
        );
    }

    #[test]
    fn proctor_defaults_to_no_publish() {
        let mut c = claims(0);
        c.role = RoleClaim::Proctor;
        assert!(!c.can_publish());
        assert!(c.can_subscribe());
    }
}
