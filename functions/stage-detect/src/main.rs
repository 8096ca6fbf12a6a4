#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    // The model is loaded once, before the function takes its first call.
    let dir = stage_detect::model_dir();
    let detector = stage_detect::Detector::load(&dir)
        .map_err(|e| format!("loading the model from {}: {e}", dir.display()))?;
    fave_common::stage::main(stage_detect::function::Detect::new(detector)).await
}
