//! Participant tokens: minted locally with `--secret` (HS256, the claims of
//! docs/protocol.md), or fetched from a `--dev` server's `GET /dev/token`. Also the tiny
//! HTTP/1.1 GET both that and the metrics scrape use (one request per connection,
//! `Connection: close`; pulling an HTTP client crate in for two GETs is not worth it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// `GET {url}/dev/token`.
    Dev(String),
    /// Mint with this HS256 secret.
    Secret(String),
}

/// Who a token is for.
pub struct TokenReq<'a> {
    /// Room.
    pub room: &'a str,
    /// Identity (`sub`) and display name.
    pub identity: &'a str,
    /// Proctor (else learner).
    pub proctor: bool,
    /// Publish grant.
    pub publish: bool,
    /// Test impairment: percent of media datagrams the server drops towards this
    /// participant (honoured only by a server started with `--allow-impairment`).
    pub loss_pct: Option<f32>,
}

impl TokenSource {
    /// A token for `r`.
    pub async fn token(&self, r: &TokenReq<'_>) -> anyhow::Result<String> {
        match self {
            TokenSource::Secret(secret) => {
                let exp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    + 3600;
                let mut claims = json!({
                    "sub": r.identity,
                    "name": r.identity,
                    "room": r.room,
                    "role": if r.proctor { "proctor" } else { "learner" },
                    "exp": exp,
                    "publish": r.publish,
                    "subscribe": true,
                });
                if let Some(l) = r.loss_pct {
                    claims["impair_loss"] = json!((l / 100.0).clamp(0.0, 0.9));
                }
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &claims,
                    &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                )
                .context("mint token")
            }
            TokenSource::Dev(url) => {
                let mut path = format!(
                    "/dev/token?room={}&name={}&identity={}&role={}&publish={}",
                    r.room,
                    r.identity,
                    r.identity,
                    if r.proctor { "proctor" } else { "learner" },
                    u8::from(r.publish)
                );
                if let Some(l) = r.loss_pct {
                    path.push_str(&format!("&loss={l}"));
                }
                let (status, body) = http_get(url, &path, Duration::from_secs(10)).await?;
                if status != 200 {
                    bail!(
                        "GET /dev/token: HTTP {status}: {body} (is the server in --dev mode? else pass --secret)"
                    );
                }
                let v: serde_json::Value = serde_json::from_str(&body).context("dev token JSON")?;
                v["token"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("dev token answer has no token: {body}"))
            }
        }
    }
}

/// `host:port` of an `http://host:port[/...]` URL.
pub fn host_port(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let hp = rest.split('/').next().unwrap_or(rest);
    Ok(if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:80")
    })
}

/// GET `path` from the server at `base` (http://host:port): status and body.
pub async fn http_get(base: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let hp = host_port(base)?;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&hp)
            .await
            .with_context(|| format!("connect {hp}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {hp}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("bad HTTP answer"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| anyhow!("bad HTTP status line"))?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("GET {path}: timeout"))?
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_chunks() {
        assert_eq!(
            host_port("http://127.0.0.1:5002").unwrap(),
            "127.0.0.1:5002"
        );
        assert_eq!(host_port("http://a/x").unwrap(), "a:80");
        assert!(host_port("https://a").is_err());
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[tokio::test]
    async fn minted_tokens_carry_the_claims() {
        let t = TokenSource::Secret("s3cret".into())
            .token(&TokenReq {
                room: "r1",
                identity: "u1",
                proctor: true,
                publish: false,
                loss_pct: Some(5.0),
            })
            .await
            .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = true;
        let d = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .unwrap();
        assert_eq!(d.claims["room"], "r1");
        assert_eq!(d.claims["role"], "proctor");
        assert_eq!(d.claims["publish"], false);
        assert!((d.claims["impair_loss"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    }
}
