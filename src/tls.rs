//! Pinned TLS 1.3 for QUIC: every node presents one self-signed Ed25519
//! certificate whose key is its identity, and every verifier checks that
//! certificate's own signature, the handshake signature made with its key, and
//! the [`PeerId`] it derives against what the caller expects. There is no CA
//! and no "accept anything" mode.
//!
//! How a client says which peer it expects: the QUIC server name is
//! `<peer id>.punchgate` (see [`server_name_for`]); SNI is never sent on the
//! wire. The only verifier that accepts a key it was not told about is the
//! trust-on-first-use one for trackers, in [`danger`], whose caller must check
//! the presented id against the remembered one before sending anything.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::identity::{Identity, PeerId, PEER_ID_LEN};

/// ALPN of peer-to-peer connections.
pub const ALPN_PEER: &[u8] = b"punchgate/1";
/// ALPN of connections to a tracker.
pub const ALPN_TRACKER: &[u8] = b"punchgate-tracker/1";
const SERVER_NAME_SUFFIX: &str = ".punchgate";

/// Only Ed25519 is accepted, for certificates and handshake signatures alike.
static ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::ring::ED25519],
    mapping: &[(SignatureScheme::ED25519, &[webpki::ring::ED25519])],
};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not build the certificate: {0}")]
    Certificate(String),
    #[error("could not build the TLS configuration: {0}")]
    Config(String),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("the peer's certificate is not a valid self-signed Ed25519 certificate: {0}")]
    BadCertificate(String),
}

/// Raised inside a handshake when the presented key is not the pinned one:
/// a misconfigured address, or someone impersonating the peer.
#[derive(thiserror::Error)]
#[error("peer id mismatch: the peer there is {presented}, not {expected}; check the id")]
pub struct PeerIdMismatch {
    pub expected: PeerId,
    pub presented: PeerId,
}

/// Raised inside a handshake when an incoming peer is not allowed by the
/// node's policy (see [`IncomingPolicy`]).
#[derive(thiserror::Error)]
#[error("peer {0} is not allowed to connect")]
pub struct PeerNotAllowed(pub PeerId);

// rustls shows these through `Debug`; make that the readable text.
impl std::fmt::Debug for PeerIdMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Debug for PeerNotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Decides which authenticated peers may connect in; consulted during the
/// handshake, so a refused peer never gets a connection.
pub type IncomingPolicy = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

/// An incoming policy that lets any authenticated peer in.
pub fn allow_any_peer() -> IncomingPolicy {
    Arc::new(|_| true)
}

/// The QUIC server name a client uses to say it expects `peer`.
pub fn server_name_for(peer: &PeerId) -> String {
    format!("{peer}{SERVER_NAME_SUFFIX}")
}

fn expected_peer(server_name: &ServerName<'_>) -> Option<PeerId> {
    let ServerName::DnsName(name) = server_name else {
        return None;
    };
    name.as_ref().strip_suffix(SERVER_NAME_SUFFIX)?.parse().ok()
}

/// Checks that `cert` is a well-formed, currently valid X.509 certificate
/// signed by its own Ed25519 key (proof the presenter holds the key it names),
/// and returns the [`PeerId`] that key is.
pub fn verify_self_signed(
    cert: &CertificateDer<'_>,
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<PeerId, rustls::Error> {
    let bad = |e: webpki::Error| rustls::Error::InvalidCertificate(webpki_error(e));
    let anchor = webpki::anchor_from_trusted_cert(cert).map_err(bad)?;
    let entity = webpki::EndEntityCert::try_from(cert).map_err(bad)?;
    entity
        .verify_for_usage(
            ED25519_ONLY.all,
            std::slice::from_ref(&anchor),
            &[],
            now,
            usage,
            None,
            None,
        )
        .map_err(bad)?;
    peer_id_from_spki(&anchor.subject_public_key_info).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))
}

fn webpki_error(error: webpki::Error) -> CertificateError {
    match error {
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            CertificateError::BadSignature
        }
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    }
}

/// Extracts the raw key from an Ed25519 SubjectPublicKeyInfo, given with or
/// without its outer SEQUENCE header.
fn peer_id_from_spki(spki: &[u8]) -> Option<PeerId> {
    let key = if spki.len() == ED25519_SPKI_PREFIX.len() + PEER_ID_LEN {
        spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?
    } else {
        spki.strip_prefix(&ED25519_SPKI_PREFIX[2..])?
    };
    Some(PeerId::from_bytes(key.try_into().ok()?))
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(message, cert, dss, &ED25519_ONLY)
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

fn refuse(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// Client side: the server must be exactly the peer named in the server name.
#[derive(Debug)]
struct PinnedServerVerifier;

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        }
        let expected = expected_peer(server_name)
            .ok_or_else(|| rustls::Error::General("server name does not name a peer id".into()))?;
        let presented = verify_self_signed(end_entity, now, webpki::KeyUsage::server_auth())?;
        if presented != expected {
            return Err(refuse(PeerIdMismatch {
                expected,
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.supported_schemes()
    }
}

/// Server side: a client certificate is mandatory; its key must be proven and
/// its peer id allowed by the node's policy.
struct PeerClientVerifier {
    policy: IncomingPolicy,
}

impl std::fmt::Debug for PeerClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerClientVerifier")
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ));
        }
        let presented = verify_self_signed(end_entity, now, webpki::KeyUsage::client_auth())?;
        if !(self.policy)(&presented) {
            return Err(refuse(PeerNotAllowed(presented)));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ED25519_ONLY.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The identity's self-signed certificate and its key, as rustls takes them.
pub struct CertifiedIdentity {
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl CertifiedIdentity {
    pub fn new(identity: &Identity) -> Result<Self, TlsError> {
        let cert_error = |e: rcgen::Error| TlsError::Certificate(e.to_string());
        let key_pair = rcgen::KeyPair::try_from(identity.pkcs8_der()).map_err(cert_error)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["punchgate".to_string()]).map_err(cert_error)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("punchgate {}", identity.peer_id()),
        );
        let cert = params.self_signed(&key_pair).map_err(cert_error)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(identity.pkcs8_der().to_vec()),
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    fn client_tls(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
        alpn: &[u8],
    ) -> Result<quinn::ClientConfig, TlsError> {
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key())
            .map_err(config_error)?;
        tls.enable_sni = false;
        tls.alpn_protocols = vec![alpn.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }

    /// Client configuration that only accepts the peer named by the server
    /// name of each connection (use [`server_name_for`]).
    pub fn pinned_client(&self, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
        self.client_tls(Arc::new(PinnedServerVerifier), alpn)
    }

    /// Server configuration for `alpn`, letting in the peers `policy` allows.
    pub fn server(
        &self,
        alpn: &[u8],
        policy: IncomingPolicy,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(Arc::new(PeerClientVerifier { policy }))
            .with_single_cert(vec![self.cert.clone()], self.key())
            .map_err(config_error)?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        tls.max_early_data_size = 0;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }
}

/// The authenticated peer id of an established connection.
pub fn peer_id_of(connection: &quinn::Connection) -> Result<PeerId, TlsError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate)?;
    let cert = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    // The handshake already verified the certificate; this only re-derives the id.
    let anchor = webpki::anchor_from_trusted_cert(cert)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    peer_id_from_spki(&anchor.subject_public_key_info)
        .ok_or_else(|| TlsError::BadCertificate("not an Ed25519 key".into()))
}

/// Verification that accepts a key nobody told it about. Only for trackers
/// given as a bare `host:port`: the caller must compare the presented id with
/// the one remembered for that address (see `home::KnownKeys`) before it
/// sends anything over the connection.
pub mod danger {
    use super::*;

    /// Accepts any certificate that passes the self-signature and handshake
    /// checks, whatever peer id it carries.
    #[derive(Debug)]
    struct TrustOnFirstUseVerifier;

    impl ServerCertVerifier for TrustOnFirstUseVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if !intermediates.is_empty() {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::BadEncoding,
                ));
            }
            verify_self_signed(end_entity, now, webpki::KeyUsage::server_auth())?;
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            tls12_refused()
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            ED25519_ONLY.supported_schemes()
        }
    }

    /// An identity that presents `cert` instead of its own certificate: for
    /// tests that prove the other side refuses a certificate that does not
    /// match the key or whose signature is broken.
    pub fn with_certificate(
        identity: &Identity,
        cert: CertificateDer<'static>,
    ) -> CertifiedIdentity {
        CertifiedIdentity {
            cert,
            key: PrivatePkcs8KeyDer::from(identity.pkcs8_der().to_vec()),
        }
    }

    /// Client configuration trusting whatever tracker answers; see the module doc.
    pub fn trust_on_first_use_client(
        identity: &CertifiedIdentity,
        alpn: &[u8],
    ) -> Result<quinn::ClientConfig, TlsError> {
        identity.client_tls(Arc::new(TrustOnFirstUseVerifier), alpn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn own_certificate_verifies_and_yields_the_peer_id() {
        let identity = Identity::generate().unwrap();
        let certified = CertifiedIdentity::new(&identity).unwrap();
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            let id = verify_self_signed(&certified.cert, now(), usage).unwrap();
            assert_eq!(id, identity.peer_id());
        }
    }

    #[test]
    fn certificate_with_a_bad_signature_is_refused() {
        let identity = Identity::generate().unwrap();
        let certified = CertifiedIdentity::new(&identity).unwrap();
        let mut der = certified.cert.to_vec();
        // The signature is the last 64 bytes of the DER.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let err = verify_self_signed(
            &CertificateDer::from(der),
            now(),
            webpki::KeyUsage::server_auth(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        );
    }

    #[test]
    fn certificate_signed_by_another_key_is_refused() {
        // A certificate naming key A but signed by key B: a forged claim to be A.
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let a_key = rcgen::KeyPair::try_from(a.pkcs8_der()).unwrap();
        let b_key = rcgen::KeyPair::try_from(b.pkcs8_der()).unwrap();
        let issuer_params = rcgen::CertificateParams::new(vec!["punchgate".to_string()]).unwrap();
        let issuer = issuer_params.self_signed(&b_key).unwrap();
        let forged = rcgen::CertificateParams::new(vec!["punchgate".to_string()])
            .unwrap()
            .signed_by(&a_key, &issuer, &b_key)
            .unwrap();
        let err =
            verify_self_signed(forged.der(), now(), webpki::KeyUsage::server_auth()).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let err = verify_self_signed(
            &CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]),
            now(),
            webpki::KeyUsage::server_auth(),
        )
        .unwrap_err();
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)));
    }

    #[test]
    fn server_name_carries_the_expected_peer() {
        let id = Identity::generate().unwrap().peer_id();
        let name = ServerName::try_from(server_name_for(&id)).unwrap();
        assert_eq!(expected_peer(&name), Some(id));
        let other = ServerName::try_from("example.com").unwrap();
        assert_eq!(expected_peer(&other), None);
    }
}
