use fave_common::config::{OrchestratorConfig, env_lookup};
use fave_common::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = OrchestratorConfig::from_lookup(&env_lookup)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, gateway = %config.gateway_url, "orchestrator listening");
    let app = orchestrator::App::new(config).await;
    server::serve(
        listener,
        orchestrator::router(app),
        server::shutdown_signal(),
    )
    .await?;
    Ok(())
}
