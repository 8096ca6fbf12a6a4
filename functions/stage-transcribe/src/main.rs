#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    // Logging first: the model loader logs from its own thread (the harness's second init is
    // a no-op).
    fave_common::telemetry::init();
    // A missing model stops the function at start, loudly; loading it takes longer and runs
    // in the background, so that calls for clips without sound never wait for it.
    let dir = stage_transcribe::model_dir();
    stage_transcribe::check_model_dir(&dir)
        .map_err(|e| format!("the model in {}: {e}", dir.display()))?;
    fave_common::stage::main(stage_transcribe::function::Transcribe::start_loading(dir)).await
}
