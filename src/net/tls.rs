//! TLS for networked plugins: the `tls.*` table and a rustls client configuration built
//! from it once per output instance (shared by its workers and connections), or a
//! server configuration once per server input ([`ServerTls`]).
//! Fluent Bit: src/tls/flb_tls.c (`tls_configmap`), src/tls/openssl.c.
//!
//! Mapping of Fluent Bit's OpenSSL settings onto rustls:
//! * `tls.verify on` checks the chain against `tls.ca_file`/`tls.ca_path`, else the system
//!   trust store. `tls.verify_hostname` (off by default, as in Fluent Bit) additionally
//!   checks the certificate's names against `tls.vhost` or `host`; rustls always checks
//!   names, so with it off a name mismatch (and only that) is forgiven.
//! * `tls.verify off` accepts any certificate but still checks the handshake signatures.
//! * `tls.vhost` is the SNI name; none is sent when the target is an IP address.
//! * rustls speaks TLSv1.2 and TLSv1.3 only: `tls.min_version` below TLSv1.2 means
//!   "from TLSv1.2"; a `tls.max_version` below TLSv1.2 cannot be honoured and is an error.
//! * `tls.ciphers` takes OpenSSL or IANA suite names separated by `:`; as with OpenSSL's
//!   cipher list, naming only TLSv1.2 suites leaves every TLSv1.3 suite enabled. Names
//!   rustls does not implement are an error that lists the supported ones.
//! * `tls.key_passwd`: rustls reads unencrypted PEM keys only, so an encrypted key is an
//!   error that says how to decrypt it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ConfigError, PropKind, PropSpec, Props};

const VERSIONS: &[&str] = &["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// Fluent Bit's client `tls.*` properties.
pub const TLS_PROPS: &[PropSpec] = &[
    PropSpec::new("tls", PropKind::Bool, Some("off"), "Enable TLS."),
    PropSpec::new(
        "tls.verify",
        PropKind::Bool,
        Some("on"),
        "Verify the server's certificate chain.",
    ),
    PropSpec::new(
        "tls.verify_hostname",
        PropKind::Bool,
        Some("off"),
        "Also check that the certificate names tls.vhost (or host).",
    ),
    PropSpec::new(
        "tls.debug",
        PropKind::Int,
        Some("1"),
        "TLS log verbosity 0-4; 2 or more logs each handshake's version and cipher suite.",
    ),
    PropSpec::new(
        "tls.ca_file",
        PropKind::Str,
        None,
        "PEM file of CA certificates to trust (default: the system store).",
    ),
    PropSpec::new(
        "tls.ca_path",
        PropKind::Str,
        None,
        "Directory of PEM CA certificates to trust.",
    ),
    PropSpec::new(
        "tls.crt_file",
        PropKind::Str,
        None,
        "PEM client certificate chain.",
    ),
    PropSpec::new(
        "tls.key_file",
        PropKind::Str,
        None,
        "PEM private key of the client certificate (unencrypted).",
    ),
    PropSpec::new(
        "tls.key_passwd",
        PropKind::Str,
        None,
        "Password of an encrypted key_file (not supported: decrypt the key instead).",
    ),
    PropSpec::new(
        "tls.vhost",
        PropKind::Str,
        None,
        "Server name sent in SNI and checked by tls.verify_hostname.",
    ),
    PropSpec::new(
        "tls.min_version",
        PropKind::Enum(VERSIONS),
        Some("TLSv1.1"),
        "Lowest TLS version (TLSv1.2 is the lowest agent speaks).",
    ),
    PropSpec::new(
        "tls.max_version",
        PropKind::Enum(VERSIONS),
        Some("TLSv1.3"),
        "Highest TLS version.",
    ),
    PropSpec::new(
        "tls.ciphers",
        PropKind::Str,
        None,
        "Cipher suites, OpenSSL or IANA names separated by ':'.",
    ),
];

/// What server inputs add to [`TLS_PROPS`] (Fluent Bit: inputs only).
pub const DOWNSTREAM_TLS_PROPS: &[PropSpec] = &[PropSpec::new(
    "tls.verify_client_cert",
    PropKind::Bool,
    Some("off"),
    "Require a client certificate signed by tls.ca_file/tls.ca_path (mutual TLS).",
)];

/// Cipher suites rustls implements: OpenSSL name, IANA name, rustls suite.
fn suite_names() -> Vec<(&'static str, &'static str, SupportedCipherSuite)> {
    use rustls::crypto::ring::cipher_suite as cs;
    vec![
        (
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_128_GCM_SHA256",
            cs::TLS13_AES_128_GCM_SHA256,
        ),
        (
            "TLS_AES_256_GCM_SHA384",
            "TLS_AES_256_GCM_SHA384",
            cs::TLS13_AES_256_GCM_SHA384,
        ),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256",
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// `tls.ciphers` → rustls suites (see the module doc for the TLSv1.3 rule).
fn parse_ciphers(list: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let table = suite_names();
    let mut tls12 = Vec::new();
    let mut tls13 = Vec::new();
    for name in list.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        let Some((_, _, suite)) = table
            .iter()
            .find(|(o, i, _)| o.eq_ignore_ascii_case(name) || i.eq_ignore_ascii_case(name))
        else {
            return Err(format!(
                "cipher suite names agent supports, separated by ':' ('{name}' is not one): {}",
                table
                    .iter()
                    .map(|(o, _, _)| *o)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let list = match suite {
            SupportedCipherSuite::Tls13(_) => &mut tls13,
            SupportedCipherSuite::Tls12(_) => &mut tls12,
        };
        if !list
            .iter()
            .any(|s: &SupportedCipherSuite| s.suite() == suite.suite())
        {
            list.push(*suite);
        }
    }
    if tls13.is_empty() {
        tls13 = table
            .iter()
            .map(|(_, _, s)| *s)
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
            .collect();
    }
    tls13.extend(tls12);
    Ok(tls13)
}

/// `tls.min_version`/`tls.max_version` → the rustls versions inside that range.
fn versions(min: &str, max: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let rank = |v: &str| {
        VERSIONS
            .iter()
            .position(|x| x.eq_ignore_ascii_case(v))
            .unwrap_or(0)
    };
    let (lo, hi) = (rank(min), rank(max));
    if hi < 4 {
        return Err("TLSv1.2 or TLSv1.3: agent (rustls) does not speak older TLS versions".into());
    }
    if lo > hi {
        return Err(format!(
            "a version range where tls.min_version ({min}) <= tls.max_version ({max})"
        ));
    }
    let mut out = Vec::new();
    if lo <= 4 {
        out.push(&rustls::version::TLS12);
    }
    out.push(&rustls::version::TLS13);
    if hi == 4 {
        out.pop();
    }
    Ok(out)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = crate::config::read_regular_file(path, crate::config::MAX_CONFIG_FILE)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The trust anchors: `tls.ca_file` and/or `tls.ca_path`, else the system store.
fn roots(props: &Props) -> Result<RootCertStore, ConfigError> {
    let mut store = RootCertStore::empty();
    if let Some(file) = props.str("tls.ca_file") {
        let certs = read_certs(Path::new(file)).map_err(|e| {
            props.error(
                "tls.ca_file",
                format!("a PEM file of CA certificates ({e})"),
            )
        })?;
        store.add_parsable_certificates(certs);
    }
    if let Some(dir) = props.str("tls.ca_path") {
        let expected = |e: String| {
            props.error(
                "tls.ca_path",
                format!("a directory of PEM CA certificates ({e})"),
            )
        };
        let entries =
            std::fs::read_dir(dir).map_err(|e| expected(format!("cannot read {dir}: {e}")))?;
        let mut paths: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        let mut found = 0;
        for path in paths {
            // A hashed OpenSSL directory also holds CRLs and other files: skip what has
            // no certificate, as OpenSSL's lookup does.
            if let Ok(certs) = read_certs(&path) {
                found += store.add_parsable_certificates(certs).0;
            }
        }
        if found == 0 {
            return Err(expected(format!("no PEM certificate in {dir}")));
        }
    }
    if !props.is_set("tls.ca_file") && !props.is_set("tls.ca_path") {
        let native = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(native.certs);
        if store.is_empty() {
            let why = native
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(props.error(
                "tls.ca_file",
                format!("a CA file: the system trust store has no certificates{why}"),
            ));
        }
    }
    Ok(store)
}

fn client_cert(
    props: &Props,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, ConfigError> {
    let (crt, key) = (props.str("tls.crt_file"), props.str("tls.key_file"));
    let (crt, key) = match (crt, key) {
        (None, None) => {
            if props.is_set("tls.key_passwd") {
                crate::warn!(
                    "{}: [config] {}: tls.key_passwd is set without tls.key_file; it is ignored",
                    props.span_of("tls.key_passwd"),
                    props.plugin()
                );
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(props.error("tls.crt_file", "to be set together with tls.key_file"))
        }
        (None, Some(_)) => {
            return Err(props.error("tls.key_file", "to be set together with tls.crt_file"))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let certs = read_certs(Path::new(crt))
        .map_err(|e| props.error("tls.crt_file", format!("a PEM certificate file ({e})")))?;
    let text = crate::config::read_regular_file(Path::new(key), crate::config::MAX_CONFIG_FILE)
        .map_err(|e| props.error("tls.key_file", format!("a readable PEM key file ({e})")))?;
    if text.windows(9).any(|w| w == b"ENCRYPTED") {
        let name = if props.is_set("tls.key_passwd") {
            "tls.key_passwd"
        } else {
            "tls.key_file"
        };
        return Err(props.error(
            name,
            format!("an unencrypted key: agent cannot decrypt private keys; write a decrypted copy with 'openssl pkey -in {key} -out {key}.plain' and point tls.key_file at it"),
        ));
    }
    if props.is_set("tls.key_passwd") {
        crate::warn!(
            "{}: [config] {}: tls.key_file is not encrypted; tls.key_passwd is not needed",
            props.span_of("tls.key_passwd"),
            props.plugin()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        props.error(
            "tls.key_file",
            format!("a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    Ok(Some((certs, key)))
}

/// `tls.verify on` with `tls.verify_hostname off`: the chain must verify, the name may not match.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the name only after the chain verified.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `tls.verify off`: any certificate, but the handshake signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
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
        crypto::verify_tls13_signature(
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

/// The TLS side of one output instance: built once, shared by its connections.
#[derive(Clone)]
pub struct TlsSetup {
    pub connector: TlsConnector,
    /// SNI and the name verified: `tls.vhost`, else `host` (an IP address sends no SNI).
    pub server_name: ServerName<'static>,
    /// `tls.debug >= 2`: log the negotiated version and suite of each handshake.
    pub log_handshake: bool,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What client and server TLS read alike: `tls.debug` (0-4), the cipher suites of
/// `tls.ciphers` on the ring provider, and the version range.
fn common(
    props: &Props,
) -> Result<
    (
        i64,
        Arc<CryptoProvider>,
        Vec<&'static SupportedProtocolVersion>,
    ),
    ConfigError,
> {
    let debug = props.int("tls.debug").unwrap_or(1);
    if !(0..=4).contains(&debug) {
        return Err(props.error("tls.debug", "a level from 0 to 4"));
    }
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(list) = props.str("tls.ciphers") {
        provider.cipher_suites = parse_ciphers(list).map_err(|e| props.error("tls.ciphers", e))?;
    }
    let versions = versions(
        props.str("tls.min_version").unwrap_or("TLSv1.1"),
        props.str("tls.max_version").unwrap_or("TLSv1.3"),
    )
    .map_err(|e| props.error("tls.max_version", e))?;
    Ok((debug, Arc::new(provider), versions))
}

impl TlsSetup {
    /// `None` when `tls` is off. Reads the files now, so a bad path is a config error.
    pub fn from_props(props: &Props, host: &str) -> Result<Option<TlsSetup>, ConfigError> {
        if props.bool("tls") != Some(true) {
            return Ok(None);
        }
        TlsSetup::always(props, host).map(Some)
    }

    /// TLS with the section's `tls.*` whatever `tls` says: for a plugin that always uses
    /// TLS (Fluent Bit's cloudwatch_logs).
    pub fn always(props: &Props, host: &str) -> Result<TlsSetup, ConfigError> {
        let (debug, provider, versions) = common(props)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| {
                props.error(
                    "tls.ciphers",
                    format!("suites usable with the chosen TLS versions ({e})"),
                )
            })?;
        let verifier: Arc<dyn ServerCertVerifier> = if props.bool("tls.verify") == Some(false) {
            Arc::new(NoVerify(provider.clone()))
        } else {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(props)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| props.error("tls.ca_file", format!("usable CA certificates ({e})")))?;
            if props.bool("tls.verify_hostname") == Some(true) {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match client_cert(props)? {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
                props.error("tls.key_file", format!("the key of tls.crt_file ({e})"))
            })?,
            None => builder.with_no_client_auth(),
        };
        let name = props.str("tls.vhost").unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            let key = if props.is_set("tls.vhost") {
                "tls.vhost"
            } else {
                "host"
            };
            props.error(key, "a DNS name or an IP address")
        })?;
        Ok(TlsSetup {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            log_handshake: debug >= 2,
        })
    }
}

impl TlsSetup {
    /// A verifying client to `host` with the system's CA store and default versions:
    /// for endpoints an output reaches besides its destination (AWS STS), which Fluent
    /// Bit also reaches with its own default TLS context.
    pub fn system(host: &str) -> Result<TlsSetup, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(store)
            .with_no_client_auth();
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("'{host}' is not a DNS name or an IP address"))?;
        Ok(TlsSetup {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            log_handshake: false,
        })
    }
}

/// The TLS side of a server input: built once, shared by its connections.
///
/// `tls.crt_file`/`tls.key_file` are required. `tls.verify_client_cert on` requires a
/// client certificate that chains to `tls.ca_file`/`tls.ca_path` (else the system store);
/// off, none is asked for (Fluent Bit's `tls.verify` has no effect on a server).
/// `tls.min_version`, `tls.max_version` and `tls.ciphers` apply as for outputs.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: TlsAcceptor,
    /// `tls.debug >= 2`: log the negotiated version and suite of each handshake.
    pub log_handshake: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `None` when `tls` is off. Reads the files now, so a bad path is a config error.
    pub fn from_props(props: &Props) -> Result<Option<ServerTls>, ConfigError> {
        if props.bool("tls") != Some(true) {
            return Ok(None);
        }
        let (debug, provider, versions) = common(props)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| {
                props.error(
                    "tls.ciphers",
                    format!("suites usable with the chosen TLS versions ({e})"),
                )
            })?;
        let builder = if props.bool("tls.verify_client_cert") == Some(true) {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(props)?), provider)
                    .build()
                    .map_err(|e| {
                        props.error("tls.ca_file", format!("usable CA certificates ({e})"))
                    })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let Some((certs, key)) = client_cert(props)? else {
            return Err(props.error(
                "tls.crt_file",
                "a PEM certificate file: a TLS server needs tls.crt_file and tls.key_file",
            ));
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| props.error("tls.key_file", format!("the key of tls.crt_file ({e})")))?;
        Ok(Some(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            log_handshake: debug >= 2,
        }))
    }
}

/// A client TLS config for a connection not configured by `tls.*` keys (the
/// `kubernetes` filter's `kube_ca_file`/`kube_ca_path`): trust anchors read from those
/// files (else the system store), chain verification unless `verify` is off, and the
/// host name checked only with `verify_hostname` (Fluent Bit's defaults for both).
pub fn client_config_from_files(
    ca_file: Option<&Path>,
    ca_path: Option<&Path>,
    verify: bool,
    verify_hostname: bool,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if !verify {
        Arc::new(NoVerify(provider.clone()))
    } else {
        let mut store = RootCertStore::empty();
        if let Some(file) = ca_file {
            store.add_parsable_certificates(read_certs(file)?);
        }
        if let Some(dir) = ca_path {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for path in entries.flatten().map(|e| e.path()) {
                if let Ok(certs) = read_certs(&path) {
                    store.add_parsable_certificates(certs);
                }
            }
        }
        if ca_file.is_none() && ca_path.is_none() {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        if store.is_empty() {
            return Err("no CA certificate to verify the server with".into());
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| e.to_string())?;
        if verify_hostname {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_openssl_and_iana() {
        let suites =
            parse_ciphers("ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
                .unwrap();
        let names: Vec<_> = suites.iter().map(|s| s.suite().as_str().unwrap()).collect();
        // Only TLSv1.2 suites named: every TLSv1.3 suite stays, as with OpenSSL's cipher list.
        assert_eq!(
            names,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ]
        );
        let only13 = parse_ciphers("TLS_AES_256_GCM_SHA384").unwrap();
        assert_eq!(only13.len(), 1);
        let e = parse_ciphers("HIGH:!aNULL").unwrap_err();
        assert!(e.contains("('HIGH' is not one)"), "{e}");
        assert!(e.contains("ECDHE-RSA-AES256-GCM-SHA384"), "{e}");
    }

    #[test]
    fn version_ranges() {
        let v = |a, b| versions(a, b).map(|v| v.iter().map(|x| x.version).collect::<Vec<_>>());
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(v("TLSv1.1", "TLSv1.3").unwrap(), [TLSv1_2, TLSv1_3]);
        assert_eq!(v("tlsv1.3", "TLSv1.3").unwrap(), [TLSv1_3]);
        assert_eq!(v("TLSv1", "TLSv1.2").unwrap(), [TLSv1_2]);
        assert!(v("TLSv1", "TLSv1.1")
            .unwrap_err()
            .contains("does not speak older"));
        assert!(v("TLSv1.3", "TLSv1.2").unwrap_err().contains("min_version"));
    }
}
