//! The API's TCP listener: accepts connections and serves the router on
//! each (HTTP/1.1 and HTTP/2), within bounds.
//!
//! Owns the connection budget of the API: at most `max_connections` at
//! once (a connection past it is closed at once, so a flood cannot pin the
//! daemon at its file limit), a first-byte timeout (a silent connection is
//! closed), a header-read timeout that also bounds the idle wait between
//! keep-alive requests (a half-sent or forgotten connection is closed), and
//! the graceful stop. Never looks at a request's content.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// How the listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A request's headers must arrive within this, counted from the
    /// connection's start or the end of its previous response. Longer than
    /// the idle time common HTTP clients keep a pooled connection for
    /// (reqwest: 90 s), so a client never reuses one the daemon is closing.
    pub header_read_timeout: Duration,
}

/// A new connection must send its first bytes within this (or within the
/// header-read timeout, if that is shorter): a flood of silent connections
/// goes quickly.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `router` on `listener` until `stop` turns true, then lets the
/// requests in flight finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout);
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or the like: wait a little, go on.
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    %peer,
                    refused,
                    max = limits.max_connections,
                    "API connection limit reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout.min(FIRST_BYTE_TIMEOUT);
        tokio::spawn(async move {
            // The first bytes must come in time too: telling HTTP/1 from
            // HTTP/2 reads them before hyper's own header timer runs.
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    tracing::debug!(%peer, "API connection sent nothing in time: closed");
                    return;
                }
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("closing the connections still open after the grace period");
    }
}
