//! TLS for the node (rustls with the ring provider; no C TLS library): HTTPS on its one port,
//! client certificates checked against the cluster CA, and the HTTP client every node-to-node
//! call goes through, which trusts only that CA and presents the node's certificate.
//!
//! The server asks every client for a certificate but does not insist: clients of the KV API
//! and `/api/cluster/info` need none. A request whose connection presented a certificate the
//! CA signed carries [`ClientCert`]; the Raft and admin routes refuse requests without it
//! (see `api::require_client_cert`), on top of their own credential (signature, admin token).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use xp_config::TlsFiles;

/// Why TLS could not be set up; names the file and the env key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} = {path}: {why}")]
    File { key: &'static str, path: String, why: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The node's TLS material, loaded once at start.
pub struct Tls {
    pub server: Arc<rustls::ServerConfig>,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// Marks a request whose connection presented a client certificate signed by the cluster CA.
#[derive(Clone, Copy, Debug)]
pub struct ClientCert;

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        key,
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

fn certs(
    key: &'static str,
    path: &std::path::Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| {
            TlsError::File { key, path: path.display().to_string(), why: e.to_string() }
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            key,
            path: path.display().to_string(),
            why: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

impl Tls {
    /// Loads and checks the three files: the key must match the certificate, which the CA
    /// must have signed (a mismatch is found here, not at the first handshake).
    pub fn load(files: &TlsFiles, host: &str) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_pem = read("XP_TLS_CA", &files.ca)?;
        let cert_pem = read("XP_TLS_CERT", &files.cert)?;
        let key_pem = read("XP_TLS_KEY", &files.key)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs("XP_TLS_CA", &files.ca, &ca_pem)? {
            roots.add(c).map_err(|e| TlsError::File {
                key: "XP_TLS_CA",
                path: files.ca.display().to_string(),
                why: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = certs("XP_TLS_CERT", &files.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
            key: "XP_TLS_KEY",
            path: files.key.display().to_string(),
            why: format!("no PEM private key: {e}"),
        })?;
        // The node's own certificate must be one its peers accept, for the host they dial:
        // check it against the CA and the host of XP_API_BASE_URL.
        webpki_check(&chain, &roots, &provider, host).map_err(|why| TlsError::File {
            key: "XP_TLS_CERT",
            path: files.cert.display().to_string(),
            why,
        })?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::File {
                key: "XP_TLS_KEY",
                path: files.key.display().to_string(),
                why: format!("does not fit XP_TLS_CERT: {e}"),
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { server: Arc::new(server), ca_pem, cert_pem, key_pem })
    }

    /// A client that trusts only the cluster CA and presents this node's certificate.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        certs::client_builder(&self.ca_pem, &self.cert_pem, &self.key_pem)
            .map_err(|e| TlsError::Setup(format!("XP_TLS_CA/XP_TLS_CERT/XP_TLS_KEY: {e}")))
    }
}

/// Checks that the first certificate of `chain` is signed by one of `roots`, fit for a TLS
/// client, and fit for a TLS server named `host` (the same checks peers make).
fn webpki_check(
    chain: &[CertificateDer<'static>],
    roots: &rustls::RootCertStore,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    host: &str,
) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    let roots = Arc::new(roots.clone());
    let now = rustls::pki_types::UnixTime::now();
    let (end, rest) = chain.split_first().ok_or("no certificate")?;
    let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    as_client
        .verify_client_cert(end, rest, now)
        .map_err(|e| format!("not accepted by XP_TLS_CA: {e}"))?;
    let as_server =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("the host {host:?} of XP_API_BASE_URL is not a server name: {e}"))?;
    as_server.verify_server_cert(end, rest, &name, &[], now).map(|_| ()).map_err(|e| {
        format!(
            "does not name {host}, the host of XP_API_BASE_URL, so peers would refuse it ({e}); \
             issue it with `--host {host}`"
        )
    })
}

/// A client for node-to-node and node-to-self calls: TLS as configured, plain HTTP otherwise.
pub fn client_builder(tls: Option<&Tls>) -> Result<reqwest::ClientBuilder, TlsError> {
    match tls {
        Some(t) => t.client_builder(),
        None => Ok(reqwest::Client::builder()),
    }
}

/// Serves `router` on `listener` until `stop` resolves: over TLS with `config`, else plain
/// HTTP/1.1. Every connection gets bounded time to handshake (10 s) and to send a request's
/// headers (30 s), so idle or slow clients cannot hold connections open; requests of a
/// connection whose client presented a certificate the CA signed carry [`ClientCert`].
/// Dropping the returned future drops every open connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Option<Arc<rustls::ServerConfig>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let acceptor = config.map(TlsAcceptor::from);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let (acceptor, router) = (acceptor.clone(), router.clone());
                    conns.spawn(connection(tcp, peer, acceptor, router));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: Option<TlsAcceptor>,
    router: Router,
) {
    let Some(acceptor) = acceptor else {
        return http1(hyper_util::rt::TokioIo::new(tcp), peer, false, router).await;
    };
    let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let verified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
    http1(hyper_util::rt::TokioIo::new(stream), peer, verified, router).await
}

async fn http1<S>(
    io: hyper_util::rt::TokioIo<S>,
    peer: std::net::SocketAddr,
    verified: bool,
    router: Router,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if verified {
            req.extensions_mut().insert(ClientCert);
        }
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, svc)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The host of an `http(s)://host:port` URL (an IPv6 address without its brackets).
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
}
