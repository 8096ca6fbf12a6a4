#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    fave_common::stage::main(stage_ffmpeg_0::Ffmpeg0).await
}
