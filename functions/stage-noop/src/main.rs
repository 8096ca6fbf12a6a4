#[tokio::main]
async fn main() -> fave_common::stage::MainResult {
    fave_common::stage::main(stage_noop::Noop).await
}
