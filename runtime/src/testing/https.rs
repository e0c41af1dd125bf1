//! A test HTTPS server: an axum router behind rustls on a loopback port, in a thread of its
//! own (so it keeps answering while a test blocks), counting the TLS handshakes it completed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A running test HTTPS server; it stops when dropped.
pub struct HttpsServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The CA that signed its certificate (PEM), and the file holding it.
    pub ca_pem: Vec<u8>,
    /// The CA file.
    pub ca_file: std::path::PathBuf,
    handshakes: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HttpsServer {
    /// Serve `router` with a certificate for `names` (and 127.0.0.1) from a CA made in `dir`.
    pub fn start(dir: &Path, names: &[&str], router: axum::Router) -> HttpsServer {
        let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        sans.push("127.0.0.1".into());
        let certs = crate::certs::ensure_local(dir, &sans, "https://127.0.0.1").expect("test certificates");
        let read = |p: &Path| std::fs::read(p).expect("test certificate");
        let chain = CertificateDer::pem_slice_iter(&read(&certs.serving_cert))
            .collect::<Result<Vec<_>, _>>()
            .expect("test chain");
        let key = PrivateKeyDer::from_pem_slice(&read(&certs.serving_key)).expect("test key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocols")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("test TLS");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        // Bound here, not by port number in the thread: a released port may be taken meanwhile.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("test server port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound port").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("test server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("test server port");
                let _ = ready_tx.send(());
                loop {
                    let (tcp, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    let (tls, router, counted) = (tls.clone(), router.clone(), counted.clone());
                    tokio::spawn(async move {
                        use tower::ServiceExt;
                        let Ok(stream) = tls.accept(tcp).await else { return };
                        counted.fetch_add(1, Ordering::SeqCst);
                        let service = hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                            router.clone().oneshot(r.map(axum::body::Body::new))
                        });
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the test server listens");
        HttpsServer {
            port,
            ca_pem: read(&certs.ca_cert),
            ca_file: certs.ca_cert,
            handshakes,
            stop: Some(stop),
        }
    }

    /// How many TLS handshakes it completed (one per connection).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
