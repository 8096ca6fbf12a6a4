//! The web page (`/ui/`) in a real browser: the stack makes the requests the page shows,
//! then `tests/ui/ui.test.mjs` drives Debian's Chromium through Playwright against it
//! (`scripts/setup-browser` installs both; nothing is downloaded by the test).

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::util::{TestStack, file_uri, repo_root, request_id, sample};

/// Where the browser is, and Playwright: missing either is this test's failure, said plainly.
fn browser() -> (PathBuf, PathBuf) {
    let chromium = PathBuf::from(
        std::env::var("FAVE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
    );
    let suite = repo_root().join("tests/ui");
    assert!(
        chromium.is_file() && suite.join("node_modules/playwright-core").is_dir(),
        "the browser tests need Chromium at {} and playwright-core in {}: run scripts/setup-browser",
        chromium.display(),
        suite.join("node_modules").display()
    );
    (chromium, suite)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_in_a_real_browser() {
    let (chromium, suite) = browser();
    let t = TestStack::start().await;
    let vtest = file_uri(&sample("vtest.avi"));
    let (status, _, done) = t
        .submit(&json!({ "video_uri": vtest, "query": "find scenes with cars" }))
        .await;
    assert_eq!(status, 200, "{done}");
    let (status, _, other) = t
        .submit(&json!({ "video_uri": file_uri(&sample("bikes.mp4")) }))
        .await;
    assert_eq!(status, 200, "{other}");
    let fake = t.dir.path().join("holiday.mp4");
    std::fs::write(&fake, "not a video").expect("written");
    let (status, _, failed) = t.submit(&json!({ "video_uri": file_uri(&fake) })).await;
    assert_eq!(status, 422, "{failed}");

    let artefacts = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"))
        .join("ui-artefacts");
    let output = Command::new("node")
        .args(["--test", "--test-reporter=tap", "ui.test.mjs"])
        .current_dir(&suite)
        .env("FAVE_CHROMIUM", &chromium)
        .env("FAVE_UI_BASE", t.url("orchestrator", "/ui/"))
        .env("FAVE_UI_COMPLETED", request_id(&done).as_str())
        .env("FAVE_UI_FAILED", request_id(&failed).as_str())
        .env("FAVE_UI_OTHER", request_id(&other).as_str())
        .env(
            "FAVE_UI_VIDEO",
            done["analysis"]["video"].as_str().expect("a video id"),
        )
        .env("FAVE_UI_SAMPLE", &vtest)
        .env("FAVE_UI_ARTEFACTS", &artefacts)
        .output()
        .expect("node runs");
    let said = String::from_utf8_lossy(&output.stdout);
    println!("{said}{}", String::from_utf8_lossy(&output.stderr));
    println!("screenshots in {}", artefacts.display());
    assert!(output.status.success(), "the browser tests failed");
    assert!(said.contains("# pass 8"), "not every browser test ran");
}
