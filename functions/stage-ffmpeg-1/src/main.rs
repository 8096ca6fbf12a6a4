#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    fave_common::stage::main(stage_ffmpeg_1::Ffmpeg1).await
}
