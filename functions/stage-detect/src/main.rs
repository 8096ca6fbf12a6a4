#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    fave_common::readiness::mark_started();
    // Logging first: the model loader logs from its own thread.
    fave_common::telemetry::init();
    // A model directory without its files stops the function at start, loudly; loading the
    // model takes longer and runs in the background while the function already listens.
    let dir = stage_detect::model_dir();
    for file in [
        stage_detect::MODEL_FILE,
        stage_detect::CFG_FILE,
        stage_detect::LABELS_FILE,
    ] {
        if !dir.join(file).exists() {
            return Err(format!("the model in {}: no {file}", dir.display()).into());
        }
    }
    // ONNX Runtime's library missing or too old stops the function here, naming the path
    // (and the version found); `FAVE_DETECT_BACKEND=tract` runs without it.
    let backend = stage_detect::Backend::from_lookup(&fave_common::config::env_lookup)?;
    if let stage_detect::Backend::OnnxRuntime { library } = &backend
        && !library.is_file()
    {
        return Err(format!(
            "FAVE_DETECT_BACKEND={}: no ONNX Runtime library at {} (run scripts/fetch-onnxruntime, set ORT_DYLIB_PATH, or set FAVE_DETECT_BACKEND=tract)",
            backend.name(),
            library.display()
        )
        .into());
    }
    let timeout = fave_common::readiness::load_timeout(&fave_common::config::env_lookup);
    let gate = stage_detect::gate::Gate::from_lookup(&fave_common::config::env_lookup)?;
    let stage =
        stage_detect::function::Detect::start_loading(dir, backend, timeout).with_gate(gate);
    fave_common::stage::main(stage).await
}
