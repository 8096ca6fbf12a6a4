//! Serving a router until SIGTERM or SIGINT, then draining in-flight calls: what every fave
//! binary's `main` does after it has read its config.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Binds the listen address. When `FAVE_ADDR_FILE` is set (the local supervisor sets it,
/// with port 0), the address the OS gave is written there once the socket is bound, so
/// the supervisor learns the port without racing anyone for a "free" one.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    if let Some(file) = std::env::var_os("FAVE_ADDR_FILE") {
        let file = PathBuf::from(file);
        // Written whole, then renamed into place: a reader never sees half an address.
        let partial = file.with_extension("partial");
        tokio::fs::write(&partial, listener.local_addr()?.to_string()).await?;
        tokio::fs::rename(&partial, &file).await?;
    }
    Ok(listener)
}

/// How long a client may take to send a request's headers; a connection that has sent
/// none of a request's headers in this time (a slow-loris, or an idle keep-alive) is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish. Every fave server (functions, orchestrator, the local gateway) serves this way:
/// hyper with a header read deadline ([`HEADER_READ_TIMEOUT`]), which `axum::serve` has no
/// setting for; bodies have theirs in [`crate::error::JsonBody`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // `shutdown` first, so it is polled before the first connection is served: a signal
        // handler it installs (`shutdown_signal`) is in place before the server answers.
        let (stream, _) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Completes on the first SIGTERM (what Kubernetes and of-watchdog send) or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received, draining");
}
