#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    fave_common::readiness::mark_started();
    // Logging first: the model loader logs from its own thread (the harness's second init is
    // a no-op).
    fave_common::telemetry::init();
    // A missing model stops the function at start, loudly; loading it takes longer and runs
    // in the background, so that calls for clips without sound never wait for it.
    let dir = stage_transcribe::model_dir();
    stage_transcribe::check_model_dir(&dir)
        .map_err(|e| format!("the model in {}: {e}", dir.display()))?;
    let timeout = fave_common::readiness::load_timeout(&fave_common::config::env_lookup);
    fave_common::stage::main(stage_transcribe::function::Transcribe::start_loading(
        dir, timeout,
    ))
    .await
}
