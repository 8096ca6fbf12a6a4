//! Serving a router until SIGTERM or SIGINT, then draining in-flight calls: what every fave
//! binary's `main` does after it has read its config.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
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

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
