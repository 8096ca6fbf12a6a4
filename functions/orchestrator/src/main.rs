use fave_common::config::env_lookup;
use fave_common::{server, telemetry};
use orchestrator::config::OrchestratorConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = OrchestratorConfig::from_lookup(&env_lookup)?;
    let listener = server::bind(config.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        gateway = %config.gateway_url,
        replica = %config.replica_id,
        "orchestrator listening"
    );
    let drain = config.drain_window;
    let app = orchestrator::App::new(config).await?;
    let resumer = orchestrator::spawn_resumer(app.clone());
    let shutdown = app.shutdown.clone();
    server::serve(listener, orchestrator::router(app.clone()), async move {
        server::shutdown_signal().await;
        // Drivers persist their state and release their leases; the server stops taking
        // requests and lets the in-flight ones answer.
        shutdown.cancel();
    })
    .await?;
    app.drivers.close();
    if tokio::time::timeout(drain, app.drivers.wait())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain window passed with drivers still running");
    }
    resumer.abort();
    Ok(())
}
