//! A test CA with a server certificate for `localhost` and a client certificate, as PEM
//! files (`ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`) and as DER.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use super::Dir;

pub struct Pki {
    pub dir: Dir,
    /// The server certificate and its PKCS#8 key.
    pub server: (CertificateDer<'static>, Vec<u8>),
    pub ca: CertificateDer<'static>,
    pub client_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "agent test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            (p.signed_by(&key, &issuer).unwrap(), key)
        };
        let (server, server_key) = leaf("localhost");
        let (client, client_key) = leaf("agent-client");
        let dir = Dir::new();
        dir.file("ca.pem", &ca.pem());
        dir.file("server.pem", &server.pem());
        dir.file("server.key", &server_key.serialize_pem());
        dir.file("client.pem", &client.pem());
        dir.file("client.key", &client_key.serialize_pem());
        Pki {
            dir,
            server: (server.der().clone(), server_key.serialize_der()),
            ca: ca.der().clone(),
            client_der: client.der().clone(),
        }
    }

    /// A TLS server configuration (any protocol version rustls finds safe, no client
    /// certificates) serving the `localhost` certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![self.server.0.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.1.clone())),
                )
                .unwrap(),
        )
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}
