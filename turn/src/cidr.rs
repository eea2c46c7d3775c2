//! IP ranges (`10.0.0.0/8`) and the peer policy: which peer addresses a relay may reach.
//!
//! Why: an open TURN relay is a proxy into the operator's own network. RFC 8656 §21.1.1
//! asks servers to refuse peers in special-purpose ranges; we deny loopback, private,
//! shared (CGNAT), link-local, multicast, unspecified and reserved addresses by default
//! and let an allow list (tests, development) punch holes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    ip: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ip/prefix` (the address is masked).
    pub fn new(ip: IpAddr, prefix: u8) -> Option<Self> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { ip, prefix })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.ip, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|e| format!("bad CIDR `{s}`: {e}"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .map_err(|e| format!("bad CIDR `{s}`: {e}"))?,
            None => max,
        };
        Cidr::new(ip, prefix).ok_or_else(|| format!("bad CIDR `{s}`: prefix over {max}"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// Ranges a relay refuses by default.
pub fn default_denied() -> Vec<Cidr> {
    let v4 = |a, b, c, d, p| Cidr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), p);
    let v6 = |s: &str, p| Cidr::new(IpAddr::V6(s.parse::<Ipv6Addr>().ok()?), p);
    [
        v4(0, 0, 0, 0, 8),      // "this network", unspecified
        v4(10, 0, 0, 0, 8),     // private
        v4(100, 64, 0, 0, 10),  // shared address space (CGNAT)
        v4(127, 0, 0, 0, 8),    // loopback
        v4(169, 254, 0, 0, 16), // link-local
        v4(172, 16, 0, 0, 12),  // private
        v4(192, 0, 0, 0, 24),   // IETF protocol assignments
        v4(192, 168, 0, 0, 16), // private
        v4(198, 18, 0, 0, 15),  // benchmarking
        v4(224, 0, 0, 0, 4),    // multicast
        v4(240, 0, 0, 0, 4),    // reserved + broadcast
        v6("::", 128),          // unspecified
        v6("::1", 128),         // loopback
        v6("64:ff9b:1::", 48),  // local-use NAT64
        v6("fc00::", 7),        // unique local
        v6("fe80::", 10),       // link-local
        v6("ff00::", 8),        // multicast
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Which peers a relay may reach.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// Refused unless allowed.
    pub denied: Vec<Cidr>,
    /// Holes in `denied` (tests, development, a private deployment).
    pub allowed: Vec<Cidr>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        PeerPolicy {
            denied: default_denied(),
            allowed: Vec::new(),
        }
    }
}

impl PeerPolicy {
    /// Whether a relay may talk to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|c| c.contains(ip)) || !self.denied.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_denies_special_ranges_and_allow_list_wins() {
        let p = PeerPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.20.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::5",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!p.permits(bad.parse().unwrap()), "{bad}");
        }
        for good in ["203.0.113.7", "8.8.8.8", "2001:db8::1", "172.32.0.1"] {
            assert!(p.permits(good.parse().unwrap()), "{good}");
        }
        let p = PeerPolicy {
            allowed: vec!["127.0.0.0/8".parse().unwrap()],
            ..p
        };
        assert!(p.permits("127.0.0.1".parse().unwrap()));
        assert!(!p.permits("10.0.0.1".parse().unwrap()));
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("x/3".parse::<Cidr>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("9.9.9.9".parse().unwrap())
        );
    }
}
