//! Running the external tools stages are built on (ffmpeg, ffprobe).
//!
//! A tool runs in the directory of its files, which are named relative to it, so no
//! absolute temp path reaches an error message; its stdin is closed and it is killed if
//! the call is dropped (a timed-out or cancelled stage leaves no ffmpeg behind).

use std::ffi::OsStr;
use std::path::Path;

use tokio::process::Command;

/// The demuxers fave lets ffmpeg and ffprobe pick for an input: containers and streams of
/// self-contained media. Left out on purpose are the demuxers that open other resources
/// named inside the file (hls, dash, concat/ffconcat, image2 with its patterns, the
/// playlists), so an uploaded playlist cannot make a stage read another file: it is not on
/// the whitelist, and ffmpeg refuses it ("Format not on whitelist"). mov's external
/// references stay off (`enable_drefs`, off by default).
pub const INPUT_DEMUXERS: &str = "mov,matroska,avi,flv,mpegts,mpeg,ogg,asf,nut,dv,gif,ivf,\
h264,hevc,m4v,mjpeg,wav,mp3,aac,flac";

/// Options that confine the next input of ffmpeg (before its `-i`) or ffprobe to the one
/// local file named: the `file` protocol only, for it and anything a demuxer would open
/// from it, and only [`INPUT_DEMUXERS`].
pub const CONFINED_INPUT: [&str; 4] = [
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    INPUT_DEMUXERS,
];

/// Runs `command` in `dir` and returns its stdout; a failure says which tool and carries
/// the tail of its stderr.
pub async fn run(command: &mut Command, dir: &Path, what: &str) -> Result<Vec<u8>, String> {
    let out = command
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("could not run {what}: {e}"))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!("{what} failed ({}): {}", out.status, tail.trim()))
}

/// A file's directory and name, to run a tool beside it.
pub fn dir_and_name(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new(".")),
        path.file_name().unwrap_or(path.as_os_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_name_the_tool_and_keep_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            Command::new("sh").args(["-c", "echo hello; echo oops >&2; exit 3"]),
            dir.path(),
            "sh",
        )
        .await;
        let err = out.unwrap_err();
        assert!(err.starts_with("sh failed"), "{err}");
        assert!(err.ends_with("oops"), "{err}");
        let ok = run(Command::new("sh").args(["-c", "pwd"]), dir.path(), "sh")
            .await
            .unwrap();
        let cwd = String::from_utf8(ok).unwrap();
        assert_eq!(
            std::fs::canonicalize(cwd.trim()).unwrap(),
            std::fs::canonicalize(dir.path()).unwrap()
        );
        let missing = run(&mut Command::new("no-such-tool-here"), dir.path(), "x").await;
        assert!(missing.unwrap_err().starts_with("could not run x"));
    }
}
