//! TLS for peer connections: rustls configurations built from the `ssl`
//! options of `bind` and `peer` lines, with HAProxy's PEM conventions.
//!
//! - `crt <pem>`: one file holding the certificate, its chain and the
//!   private key, as HAProxy reads it.
//! - `ca-file <pem>`: the CAs the other side's certificate must chain to.
//! - Listener (`bind … ssl`, a `local` peer with `ssl`): `verify none`
//!   (HAProxy's default on a bind) asks no client certificate, `optional`
//!   checks one if presented, `required` demands one.
//! - Outgoing (`peer … ssl`): `verify required` is the default, as HAProxy's
//!   `ssl-server-verify`. The server's certificate must chain to `ca-file`
//!   and be valid for the **peer name** (the name is also sent as SNI).
//!   `verify none` accepts any certificate. `crt` presents a client
//!   certificate.
//!
//! A verified client certificate is also checked against the name the peer
//! gives in its hello (see [`cert_valid_for`]): a node may only join under a
//! name its certificate carries.

use crate::config::{Config, TlsOptions, Verify};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The crypto provider of every configuration (ring, TLS 1.2 and 1.3).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificates and the private key of an HAProxy-style PEM.
fn load_crt(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let p = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file {p}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read certificate file {p}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {p}"));
    }
    let key = PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!("no usable private key in {p} ({e}), expected the certificate and its key in one PEM file")
    })?;
    Ok((certs, key))
}

/// Reads the CA certificates of a `ca-file`.
fn load_ca(path: &Path) -> Result<RootCertStore, String> {
    let p = path.display();
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read CA file {p}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("cannot read CA file {p}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("bad CA certificate in {p}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {p}"));
    }
    Ok(roots)
}

/// Server side of a listener (`bind … ssl crt …`).
pub fn server_config(opts: &TlsOptions) -> Result<Arc<ServerConfig>, String> {
    let crt = opts
        .crt
        .as_deref()
        .ok_or("'ssl' on a listener needs 'crt <pem>'")?;
    let (certs, key) = load_crt(crt)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verify = opts.verify.unwrap_or(Verify::None);
    let builder = match (verify, &opts.ca_file) {
        (Verify::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("'verify optional|required' needs 'ca-file <pem>'".into()),
        (v, Some(ca)) => {
            let roots = Arc::new(load_ca(ca)?);
            let mut vb = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if v == Verify::Optional {
                vb = vb.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(vb.build().map_err(|e| e.to_string())?)
        }
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", crt.display()))?;
    Ok(Arc::new(cfg))
}

/// Client side of an outgoing peer connection (`peer … ssl …`).
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    // HAProxy's `ssl-server-verify` defaults to required.
    let builder = match (opts.verify.unwrap_or(Verify::Required), &opts.ca_file) {
        (Verify::None, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider()))),
        (_, None) => {
            return Err(
                "'ssl' verifies the peer's certificate by default (verify required), \
                 expected 'ca-file <pem>' (or 'verify none')"
                    .into(),
            )
        }
        // `optional` has no meaning for a client: it verifies.
        (_, Some(ca)) => builder.with_root_certificates(load_ca(ca)?),
    };
    let cfg = match &opts.crt {
        Some(crt) => {
            let (certs, key) = load_crt(crt)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{}: {e}", crt.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The name a peer's certificate must carry: its peer name (a DNS name, or
/// an IP address when the peer is named by one).
pub fn peer_server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|_| {
        format!("peer name '{name}' is not a DNS name or an IP address: it cannot be checked against a certificate")
    })
}

/// Whether `cert` (already verified against the CA) is valid for the peer
/// name `name`, by its subjectAltName DNS/IP entries (as web PKI does: the
/// subject CN is not used).
pub fn cert_valid_for(cert: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let server_name = peer_server_name(name)?;
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    ee.verify_is_valid_for_subject_name(&server_name)
        .map_err(|_| format!("its certificate is not valid for the name '{name}'"))
}

/// TLS settings of the listener bound at `addr`: those of the first section
/// listening there (the parser checks that sections sharing a listener
/// agree).
pub fn listener_config(
    config: &Config,
    addr: SocketAddr,
) -> Result<Option<Arc<ServerConfig>>, String> {
    let opts = config
        .sections
        .iter()
        .find(|s| s.listen_addr(&config.global) == Some(addr))
        .and_then(|s| s.listen_tls(&config.global));
    match opts {
        Some(o) => server_config(o)
            .map(Some)
            .map_err(|e| format!("TLS on {addr}: {e}")),
        None => Ok(None),
    }
}

/// Client configurations already built, by options: every connection
/// attempt does not re-read the PEM files. Cleared by a reload.
#[derive(Default)]
pub struct ClientCache(Vec<(TlsOptions, Arc<ClientConfig>)>);

impl ClientCache {
    pub fn get(&mut self, opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
        if let Some((_, c)) = self.0.iter().find(|(o, _)| o == opts) {
            return Ok(c.clone());
        }
        let c = client_config(opts)?;
        self.0.push((opts.clone(), c.clone()));
        Ok(c)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// `verify none` on a peer line: any server certificate is accepted (the
/// handshake signature is still checked, so the session keys are sound).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names() {
        assert!(peer_server_name("enterprise1").is_ok());
        assert!(peer_server_name("lb-1.example.com").is_ok());
        assert!(peer_server_name("192.168.50.41").is_ok());
        assert!(peer_server_name("not a name").is_err());
    }

    #[test]
    fn client_needs_ca_unless_verify_none() {
        let e = client_config(&TlsOptions::default()).unwrap_err();
        assert!(e.contains("ca-file"), "{e}");
        let none = TlsOptions {
            verify: Some(Verify::None),
            ..TlsOptions::default()
        };
        assert!(client_config(&none).is_ok());
    }

    #[test]
    fn missing_files_are_named() {
        let o = TlsOptions {
            crt: Some("/nonexistent/gpe.pem".into()),
            ..TlsOptions::default()
        };
        let e = server_config(&o).unwrap_err();
        assert!(e.contains("/nonexistent/gpe.pem"), "{e}");
    }
}
