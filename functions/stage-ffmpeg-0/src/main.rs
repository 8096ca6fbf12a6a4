#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    let limits = stage_ffmpeg_0::MediaLimits::from_lookup(&fave_common::config::env_lookup)?;
    fave_common::stage::main(stage_ffmpeg_0::Ffmpeg0 { limits }).await
}
