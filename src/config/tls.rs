//! Files named by settings, read and checked once at build time: the password file and the TLS
//! PEM material (CA bundle, client certificate and key). Errors name the setting and the path
//! (paths are not secret); a file's contents never appear in an error.

use std::path::PathBuf;
use std::sync::Arc;

use super::value::{Show, Sourced};
use super::{ConfigError, Layer, Secret};

/// TLS material read (and checked) when the configuration was built.
#[derive(Clone, Default)]
pub(super) struct TlsMaterial {
    /// The CA bundle trusted instead of the system roots.
    pub(super) ca: Option<Arc<[u8]>>,
    /// The client certificate and its key, for mutual TLS.
    pub(super) client: Option<ClientPem>,
}

/// A client certificate chain and its (secret) private key, both PEM.
#[derive(Clone)]
pub(super) struct ClientPem {
    pub(super) cert: Arc<[u8]>,
    pub(super) key: Arc<[u8]>,
}

type PathSetting = Sourced<Option<PathBuf>>;

/// The path of a path setting, unless unset or empty.
fn set_path(s: &Option<PathSetting>) -> Option<(&PathSetting, &PathBuf)> {
    let s = s.as_ref().filter(|s| !s.value.is_unset())?;
    s.value.as_ref().map(|p| (s, p))
}

/// Reads a file named by a setting.
fn read(s: &PathSetting, path: &PathBuf) -> Result<Arc<[u8]>, ConfigError> {
    std::fs::read(path)
        .map(Arc::from)
        .map_err(|e| s.error(format!("cannot read the file: {e}")))
}

/// The layer holding the password read from `password_file`, when one is set: it ranks above a
/// URL's password and below an explicit one.
pub(super) fn password_layer(explicit: &Layer) -> Result<Layer, ConfigError> {
    let Some((s, path)) = set_path(&explicit.password_file) else {
        return Ok(Layer::default());
    };
    let text =
        String::from_utf8(read(s, path)?.to_vec()).map_err(|_| s.error("not valid UTF-8"))?;
    let pw = text.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        return Err(s.error("the password file is empty"));
    }
    let password = Sourced::shown_as(Some(Secret::new(pw)), &s.source, "***");
    Ok(Layer {
        password: Some(password),
        ..Layer::default()
    })
}

/// Checks the TLS file settings against `tls` and reads their material.
pub(super) fn tls_material(layer: &Layer, tls: bool) -> Result<TlsMaterial, ConfigError> {
    let (ca, cert, key) = (
        set_path(&layer.tls_ca_file),
        set_path(&layer.tls_cert_file),
        set_path(&layer.tls_key_file),
    );
    if let Some((s, _)) = ca.or(cert).or(key).filter(|_| !tls) {
        return Err(s.error("set, but TLS is off (use a rediss:// URL or REDIS_TLS=true)"));
    }
    let ca = ca.map(|(s, p)| pem(s, p, Pem::Certificates)).transpose()?;
    let client = match (cert, key) {
        (Some((cs, cp)), Some((ks, kp))) => {
            let cert = pem(cs, cp, Pem::Certificates)?;
            let key = pem(ks, kp, Pem::PrivateKey)?;
            Some(ClientPem { cert, key })
        }
        (Some((s, _)), None) | (None, Some((s, _))) => {
            return Err(s.error(
                "a client certificate needs both REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE",
            ));
        }
        (None, None) => None,
    };
    Ok(TlsMaterial { ca, client })
}

enum Pem {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds what it should, so a wrong file fails at start,
/// not at connect.
fn pem(s: &PathSetting, path: &PathBuf, kind: Pem) -> Result<Arc<[u8]>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = read(s, path)?;
    let (ok, missing) = match kind {
        Pem::Certificates => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
            (
                matches!(certs, Ok(c) if !c.is_empty()),
                "no PEM certificate in the file",
            )
        }
        Pem::PrivateKey => (
            PrivateKeyDer::from_pem_slice(&pem).is_ok(),
            "no PEM private key in the file",
        ),
    };
    if ok { Ok(pem) } else { Err(s.error(missing)) }
}
