//! Certificates made at test time with rcgen, and a fixture `redis-server` with a TLS port that
//! presents them (ARCHITECTURE.md promises 8 and 9).
//!
//! [`Pki::generate`] writes into one directory (the fixture's): `ca.pem`, the CA that signs every
//! leaf; `wrong-ca.pem`, a second, unrelated CA that signs nothing; and `NAME.pem` / `NAME.key` for
//! each [`Leaf`] asked for. [`start_tls_server`] starts a fixture server, makes the certificates in
//! its directory and restarts it with a TLS port as well as its plain one (readiness and admin
//! connections use the plain port; supervisors under test connect to the TLS port).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redis_supervisor::testing::RedisServer;

use super::helpers::{free_port, server};

/// One leaf certificate signed by the CA.
#[derive(Clone, Copy, Debug)]
pub struct Leaf {
    /// The file stem: `NAME.pem` and `NAME.key`.
    pub name: &'static str,
    /// Subject alternative names; the first is also the common name.
    pub sans: &'static [&'static str],
    /// A client certificate (`ClientAuth`) rather than a server one (`ServerAuth`).
    pub client: bool,
    /// Valid 2020–2021 only (expired), instead of 2000–4000.
    pub expired: bool,
}

impl Leaf {
    /// `localhost` + 127.0.0.1: the server certificate a client verifying `localhost` accepts.
    pub const LOCALHOST: Leaf = Leaf {
        name: "localhost",
        sans: &["localhost", "127.0.0.1"],
        client: false,
        expired: false,
    };
    /// `other.example` only: valid, but for another host name.
    pub const OTHER_HOST: Leaf = Leaf {
        name: "other",
        sans: &["other.example"],
        client: false,
        expired: false,
    };
    /// `localhost` + 127.0.0.1, expired in 2021.
    pub const EXPIRED: Leaf = Leaf {
        name: "expired",
        sans: &["localhost", "127.0.0.1"],
        client: false,
        expired: true,
    };
    /// A client certificate for mutual TLS.
    pub const CLIENT: Leaf = Leaf {
        name: "client",
        sans: &["redis-supervisor-client"],
        client: true,
        expired: false,
    };
    /// Every leaf above.
    pub const ALL: &'static [Leaf] = &[
        Leaf::LOCALHOST,
        Leaf::OTHER_HOST,
        Leaf::EXPIRED,
        Leaf::CLIENT,
    ];
}

/// The certificate files of one test, all in one directory.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The CA that signed every leaf.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed nothing the server uses.
    pub fn wrong_ca(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }

    /// The certificate of the leaf named `name` (see [`Leaf::name`]).
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// The private key of the leaf named `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Makes both CAs and every leaf of `leaves` into `dir`.
    pub fn generate(dir: &Path, leaves: &[Leaf]) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let (ca, ca_pem) = make_ca("redis-supervisor test CA");
        std::fs::write(pki.ca(), ca_pem).unwrap();
        // Another subject name, so that a verifier cannot even find a candidate issuer.
        let (_, wrong_pem) = make_ca("unrelated test CA");
        std::fs::write(pki.wrong_ca(), wrong_pem).unwrap();

        for leaf in leaves {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(leaf.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, leaf.sans[0]);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![if leaf.client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            (params.not_before, params.not_after) = if leaf.expired {
                (
                    rcgen::date_time_ymd(2020, 1, 1),
                    rcgen::date_time_ymd(2021, 1, 1),
                )
            } else {
                (
                    rcgen::date_time_ymd(2000, 1, 1),
                    rcgen::date_time_ymd(4000, 1, 1),
                )
            };
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(pki.cert(leaf.name), cert.pem()).unwrap();
            std::fs::write(pki.key(leaf.name), key.serialize_pem()).unwrap();
        }
        pki
    }
}

/// A self-signed CA: the issuer to sign with, and its certificate as PEM.
pub fn make_ca(common_name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

/// A fixture server listening with TLS on `tls_port` as well as on its plain port.
pub struct TlsRedis {
    pub server: RedisServer,
    pub tls_port: u16,
    pub pki: Pki,
}

impl TlsRedis {
    /// `rediss://localhost:TLS_PORT`.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }
}

/// A fixture server with a TLS port as well as its plain one: started plain, the certificates of
/// `leaves` made in its directory, then restarted presenting the leaf named `cert`, requiring
/// client certificates if `auth_clients`, with `extra` appended to its arguments.
pub async fn start_tls_server(
    leaves: &[Leaf],
    cert: &str,
    auth_clients: bool,
    extra: &[&str],
) -> TlsRedis {
    let mut server = server().await;
    let pki = Pki::generate(server.dir(), leaves);
    let (cert_file, key_file, ca_file) = (
        pki.cert(cert).display().to_string(),
        pki.key(cert).display().to_string(),
        pki.ca().display().to_string(),
    );
    let mut last_error = None;
    // The TLS port is picked here; if somebody takes it in between, try another.
    for _ in 0..3 {
        let tls_port = free_port();
        let port = tls_port.to_string();
        let mut args = vec![
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ];
        args.extend_from_slice(extra);
        match server.restart_with_args(&args).await {
            Ok(()) => {
                return TlsRedis {
                    server,
                    tls_port,
                    pki,
                };
            }
            Err(e) => {
                eprintln!("TLS port {tls_port}: {e}");
                last_error = Some(e);
            }
        }
    }
    panic!("redis-server with TLS did not start: {last_error:?}");
}
