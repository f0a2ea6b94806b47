//! TLS material: the CA bundle, client certificate and key named by the `tls_*_file` settings,
//! read and checked once at build time, so a wrong file fails at start, not at connect. Errors
//! name the setting and the path (paths are not secret); a file's contents never appear in one.

use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::value::Sourced;
use super::{ConfigError, Layer};

type PathSetting = Sourced<Option<PathBuf>>;

/// Checks the TLS file settings against `tls` and reads their material; `None` when no file is
/// set (TLS, if on, then trusts the system roots).
pub(super) fn certificates(
    layer: &Layer,
    tls: bool,
) -> Result<Option<redis::TlsCertificates>, ConfigError> {
    let (ca, cert, key) = (
        &layer.tls_ca_file,
        &layer.tls_cert_file,
        &layer.tls_key_file,
    );
    let Some(first) = ca.as_ref().or(cert.as_ref()).or(key.as_ref()) else {
        return Ok(None);
    };
    if !tls {
        return Err(first.error("set, but TLS is off (use a rediss:// URL or REDIS_TLS=true)"));
    }
    // At least one certificate, and nothing unreadable.
    let certificate = |s| {
        let holds = |pem: &[u8]| {
            CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .is_ok_and(|c| !c.is_empty())
        };
        pem(s, holds, "no PEM certificate in the file")
    };
    let root_cert = ca.as_ref().map(certificate).transpose()?;
    let client_tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: certificate(cert)?,
            client_key: pem(
                key,
                |k| PrivateKeyDer::from_pem_slice(k).is_ok(),
                "no PEM private key in the file",
            )?,
        }),
        (Some(s), None) | (None, Some(s)) => {
            return Err(s.error(
                "a client certificate needs both REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE",
            ));
        }
        (None, None) => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The contents of the PEM file `s` names, if `holds` finds in it what it should.
fn pem(s: &PathSetting, holds: fn(&[u8]) -> bool, missing: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = s.read()?;
    if holds(&pem) {
        Ok(pem)
    } else {
        Err(s.error(missing))
    }
}
