//! Long-term credentials (RFC 8489 §9.2): static users and TURN REST usernames, the
//! stateless nonce (issue time + HMAC over it and the client address), challenges.

use std::net::IpAddr;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::*;
use crate::codec::{self, Class, Message, Writer, attr};

impl TurnServer {
    /// Long-term credential check (RFC 8489 §9.2). On failure the answer is sent.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        io: &mut impl Io,
    ) -> Option<(String, [u8; 16])> {
        let unauthorized = (401, "Unauthorized");
        if !m.has_integrity() {
            self.stats.auth_refused += 1;
            self.reply_challenge(now, client, m, unauthorized, io);
            return None;
        }
        let (Some(user), Some(realm), Some(nonce)) = (
            m.text(attr::USERNAME),
            m.text(attr::REALM),
            m.text(attr::NONCE),
        ) else {
            self.reply_error(client, m.method, &m.txid, (400, "Bad Request"), None, io);
            return None;
        };
        if !self.nonce_fresh(now, client, nonce) {
            self.stats.auth_refused += 1;
            self.reply_challenge(now, client, m, (438, "Stale Nonce"), io);
            return None;
        }
        let key = match self.password(now, user) {
            Some(pass) if realm == self.cfg.realm => codec::long_term_key(user, realm, &pass),
            _ => {
                self.stats.auth_refused += 1;
                self.reply_challenge(now, client, m, unauthorized, io);
                return None;
            }
        };
        if !m.check_integrity(&key) {
            self.stats.auth_refused += 1;
            self.reply_challenge(now, client, m, unauthorized, io);
            return None;
        }
        Some((user.to_owned(), key))
    }

    /// The password of `user`: a static user, or a TURN REST username that has not expired.
    pub(super) fn password(&self, now: Instant, user: &str) -> Option<String> {
        if let Some(p) = self.cfg.users.get(user) {
            return Some(p.clone());
        }
        let secret = self.cfg.rest_secret.as_ref()?;
        let expiry: u64 = user.split(':').next()?.parse().ok()?;
        if expiry < self.unix(now) {
            return None;
        }
        Some(crate::rest_password(secret, user))
    }

    pub(super) fn nonce(&self, now: Instant, ip: IpAddr) -> String {
        let issued = self.unix(now) as u32;
        format!("{issued:08x}{}", hex(&self.nonce_mac(issued, ip)))
    }

    pub(super) fn nonce_mac(&self, issued: u32, ip: IpAddr) -> [u8; 8] {
        // Invariant: HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.cfg.nonce_key).expect("any key length");
        mac.update(&issued.to_be_bytes());
        match ip {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    pub(super) fn nonce_fresh(&self, now: Instant, client: Client, nonce: &str) -> bool {
        if nonce.len() != 24 || !nonce.is_ascii() {
            return false;
        }
        let Ok(issued) = u32::from_str_radix(&nonce[..8], 16) else {
            return false;
        };
        if hex(&self.nonce_mac(issued, client.addr.ip())) != nonce[8..] {
            return false;
        }
        let age = (self.unix(now) as u32).wrapping_sub(issued);
        u64::from(age) <= self.cfg.nonce_lifetime.as_secs()
    }

    pub(super) fn reply_challenge(
        &mut self,
        now: Instant,
        client: Client,
        m: &Message<'_>,
        (code, reason): Refusal,
        io: &mut impl Io,
    ) {
        let nonce = self.nonce(now, client.addr.ip());
        Writer::new(&mut self.buf, m.method, Class::Error, &m.txid)
            .error(code, reason)
            .attr(attr::REALM, self.cfg.realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .fingerprint();
        io.to_client(&client, &self.buf);
    }
}
