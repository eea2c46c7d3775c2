//! DTLS set-up paid once per process instead of once per transport.
//!
//! Why: str0m's aws-lc-rs backend builds a fresh `dimpl::Config` for every DTLS instance,
//! and `dimpl::Config::build` validates the crypto provider each time — including a full
//! test key exchange on every supported curve (P-256, P-384, X25519) and a signature check.
//! Profiling a 1 000-participant join storm showed that self-test as most of the shards'
//! CPU, and it ran twice per participant (publisher and subscriber transports). The config
//! holds nothing per connection, so we build it once (per MTU) and share it: this module is
//! a [`DtlsProvider`] that hands dimpl the shared config, with everything else (certificate
//! generation, SRTP, hashes) left to str0m's own aws-lc-rs provider.
//! `cargo bench -p studyroom-sfu --bench join` measures the difference (BENCHMARKS.md).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The crypto provider for every transport the core creates.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: SharedConfigDtls = SharedConfigDtls;
    PROVIDER
        .get_or_init(|| {
            let mut p = str0m::crypto::from_feature_flags();
            p.dtls_provider = &DTLS;
            Arc::new(p)
        })
        .clone()
}

/// Validated dimpl configs, one per MTU asked for (in practice one).
fn shared_config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
    static CONFIGS: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>> = Mutex::new(Vec::new());
    let mut configs = CONFIGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = configs.iter().find(|(m, _)| *m == mtu) {
        return Ok(c.clone());
    }
    // ICE has proven return routability before DTLS starts: no server cookie round trip.
    let mut b = dimpl::Config::builder().use_server_cookie(false);
    if let Some(m) = mtu {
        b = b.mtu(m);
    }
    let c = Arc::new(
        b.build()
            .map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))?,
    );
    configs.push((mtu, c.clone()));
    Ok(c)
}

#[derive(Debug)]
struct SharedConfigDtls;

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = shared_config(mtu)?;
        let cert = cert.clone();
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "DTLS version {other} unsupported"
                )));
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// A dimpl DTLS endpoint seen through str0m's trait (each call is dimpl's own).
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dtls::Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active)
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_built_once_per_mtu() {
        let a = shared_config(Some(1200)).expect("config");
        let b = shared_config(Some(1200)).expect("config");
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared_config(Some(1000)).expect("config");
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
