//! Accepting connections on a listener, with TLS when configured: each
//! handshake runs in its own task under a deadline (a silent client cannot
//! hold the accept loop), and at most `MAX_HANDSHAKES` run at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::tls::{Listener, Tls};

/// A TLS handshake not finished within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HANDSHAKES: usize = 512;

/// An accepted connection, plaintext or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a handler can learn about its connection (request extension
/// `tonic::transport::server::TcpConnectInfo`-like).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The client presented a certificate the listener verified.
    pub client_cert: bool,
}

impl Conn {
    pub fn info(&self) -> ConnInfo {
        match self {
            Conn::Plain(s) => ConnInfo {
                remote: s.peer_addr().ok(),
                client_cert: false,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ConnInfo {
                    remote: tcp.peer_addr().ok(),
                    client_cert: session.peer_certificates().is_some_and(|c| !c.is_empty()),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connections accepted on `listener` (Nagle off), through TLS when `tls`
/// is set. Ends, and closes the listener, when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    which: Listener,
    metrics: Arc<crate::metrics::Metrics>,
) -> ReceiverStream<io::Result<Prefixed>> {
    let (tx, rx) = mpsc::channel::<io::Result<Prefixed>>(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning; the server keeps running.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let permit = match &tls {
                Some(_) => match handshakes.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                None => None,
            };
            let acceptor = tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config(which)));
            let (tx, metrics) = (tx.clone(), metrics.clone());
            tokio::spawn(async move {
                let conn = match acceptor {
                    None => Conn::Plain(tcp),
                    Some(acceptor) => {
                        let _permit = permit;
                        let failed = |reason| {
                            metrics
                                .tls_handshakes_failed
                                .get_or_create(&crate::metrics::HandshakeLabels {
                                    listener: which.label(),
                                    reason,
                                })
                                .inc();
                        };
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => Conn::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                failed("refused");
                                tracing::debug!(%remote, error = %e, listener = which.label(), "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                failed("timeout");
                                tracing::debug!(%remote, listener = which.label(), "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                // The HTTP servers wait for a client's first bytes (its
                // preface) without a deadline: a connection that never
                // sends one is closed here instead of held forever.
                if let Ok(c) = Prefixed::first_bytes(conn, FIRST_BYTES_TIMEOUT).await {
                    let _ = tx.send(Ok(c)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A connection that sends nothing for this long after it is accepted
/// (after its TLS handshake) is closed.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP limits (issue 9 finding 6): idle and slow-header connections are
/// closed, HTTP/2 streams per connection are bounded.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// HTTP/1: a request's headers must arrive within this, and an idle
    /// keep-alive connection is closed after it.
    pub header_read_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            max_concurrent_streams: 256,
            max_header_list_size: 64 << 10,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` over `conns` until `stop`, then lets open requests
/// finish (up to `grace`).
pub async fn serve_http(
    mut conns: ReceiverStream<io::Result<Prefixed>>,
    router: axum::Router,
    limits: HttpLimits,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    use futures::StreamExt as _;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let conn = tokio::select! {
            c = conns.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => break,
            },
            _ = &mut stop => break,
        };
        let info = conn.inner.info();
        let router = router.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                use tower::ServiceExt as _;
                router.clone().oneshot(req)
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let c = builder.serve_connection_with_upgrades(TokioIo::new(conn), svc);
            let _ = watcher.watch(c.into_owned()).await;
        });
    }
    drop(conns);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

/// A connection whose first bytes were read ahead (with a deadline) and
/// are replayed before the rest.
pub struct Prefixed {
    head: Vec<u8>,
    pos: usize,
    inner: Conn,
}

impl tonic::transport::server::Connected for Prefixed {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.inner.info()
    }
}

impl Prefixed {
    /// Waits up to `within` for the client's first bytes.
    async fn first_bytes(mut inner: Conn, within: Duration) -> io::Result<Prefixed> {
        use tokio::io::AsyncReadExt as _;
        let mut head = vec![0u8; 24];
        let n = tokio::time::timeout(within, inner.read(&mut head))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.truncate(n);
        Ok(Prefixed {
            head,
            pos: 0,
            inner,
        })
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
