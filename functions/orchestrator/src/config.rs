//! The orchestrator's configuration, read once at start from the environment (through
//! `fave_common::config`'s readers) and validated there.

use std::net::SocketAddr;
use std::time::Duration;

use fave_common::config::{ConfigError, S3Settings, listen_addr, parse, parse_bool, parse_url};
use fave_common::secrets::{DEFAULT_SECRETS_DIR, Secret, SecretStore};
use url::Url;

/// What the orchestrator needs.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub listen: SocketAddr,
    pub s3: S3Settings,
    /// The OpenFaaS gateway through which stages are called.
    pub gateway_url: Url,
    /// At most this many stage calls in flight at once.
    pub max_concurrent_invocations: usize,
    /// `file://` video URIs are allowed only in local mode (`FAVE_LOCAL_MODE=true`): on a
    /// cluster they would read the orchestrator's own file system.
    pub local_mode: bool,
    /// Inputs larger than this are refused while being copied in.
    pub max_input_bytes: u64,
    /// The token every route but `/healthz` requires, when set: the secret
    /// `fave-api-token` (under `FAVE_SECRETS_DIR`), else `FAVE_API_TOKEN`.
    pub api_token: Option<Secret>,
    /// Where `s3://` inputs may come from: `(bucket, key prefix)` pairs, from
    /// `FAVE_S3_INPUTS` (`bucket` or `bucket/prefix`, comma-separated); by default only the
    /// artifacts bucket's `uploads/`. Never the store's own request data, whatever is set.
    pub s3_inputs: Vec<(String, String)>,
    /// How long copying the input in may take.
    pub input_timeout: Duration,
    /// How long one stage call may take before it counts as failed.
    pub stage_timeout: Duration,
    pub body_limit: usize,
    /// This replica's name, the owner recorded in leases: `FAVE_REPLICA_ID`, else `HOSTNAME`
    /// (a pod's name, stable across container restarts), else a random one. A process that
    /// starts under the name of one that died takes that one's leases over at once.
    pub replica_id: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often non-terminal requests with expired leases are looked for.
    pub resume_interval: Duration,
    /// How long SIGTERM waits for drivers to persist their state and release their leases.
    pub drain_window: Duration,
    /// How long `POST /` waits for a result before answering 202.
    pub sync_window: Duration,
    /// How long a call made on behalf of `/async-function` (a queue worker's delivery, which
    /// POSTs whatever it is answered to the caller's `X-Callback-Url`) is held for the
    /// request's end, so that the callback carries the result (`FAVE_ASYNC_HOLD_SECS`).
    pub async_hold: Duration,
    /// How long a stage call keeps being retried while the platform fails it (gateway
    /// unreachable, its 502/503/504, of-watchdog's 500 while the function starts): long
    /// enough for a cold start on a slow node or a gateway restart
    /// (`FAVE_PLATFORM_RETRY_SECS`). The function's own retryable errors keep the stage's
    /// count of attempts.
    pub platform_retry_window: Duration,
    /// Clip lengths the cuts aim for: at least this (when the video allows) …
    pub clip_min_s: f64,
    /// … and at most this.
    pub clip_max_s: f64,
    /// Frames per second of each clip that object detection looks at.
    pub frames_per_second: f64,
    /// Which stage table is driven (`FAVE_PIPELINE`).
    pub pipeline: PipelineChoice,
    /// Whether video requests go through the library (`FAVE_LIBRARY`, on by default): a
    /// video already analysed with the same parameters is answered from its index, without
    /// running a stage, and every analysis made is published to it.
    pub library: bool,
    /// The operator's word for the stage functions' settings the orchestrator cannot see
    /// (`FAVE_ANALYSIS_TAG`): part of every analysis's id, so changing a function's model or
    /// gate and this tag together makes new analyses instead of reusing old ones.
    pub analysis_tag: String,
    /// Whether queries are also read with the sentence-embedding model (`FAVE_EMBED`, on
    /// by default; the model from `FAVE_EMBED_DIR` or `$FAVE_MODELS/all-MiniLM-L6-v2`).
    pub embed: bool,
}

/// Which stage table the orchestrator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineChoice {
    /// `video` (the default): the video-analysis pipeline.
    Video,
    /// `noop`: `FAVE_NOOP_STEPS` request-wide no-op stages in a row, the last listing
    /// `FAVE_NOOP_CLIPS` clips, each run through one no-op per-clip task; each no-op call
    /// takes `FAVE_NOOP_WORK_MS`. Everything but the work is real (gateway, state writes,
    /// manifests), so this measures the orchestrator itself (`fave bench overhead|fanout`).
    Noop {
        steps: usize,
        clips: usize,
        work_ms: u64,
    },
}

impl OrchestratorConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let gateway_url = parse_url(lookup, "GATEWAY_URL")?
            .unwrap_or_else(|| Url::parse("http://127.0.0.1:8080").expect("a valid literal URL"));
        let max_concurrent_invocations = parse(lookup, "MAX_CONCURRENT_INVOCATIONS", 4usize)?;
        if max_concurrent_invocations == 0 {
            return Err(ConfigError {
                var: "MAX_CONCURRENT_INVOCATIONS",
                reason: "must be at least 1".into(),
            });
        }
        let clip_min_s: f64 = parse(lookup, "FAVE_CLIP_MIN_SECS", 5.0)?;
        let clip_max_s: f64 = parse(lookup, "FAVE_CLIP_MAX_SECS", 20.0)?;
        let lengths_ok = clip_min_s >= 0.0 && clip_min_s <= clip_max_s;
        if !(lengths_ok && clip_max_s >= 1.0 && clip_max_s.is_finite()) {
            return Err(ConfigError {
                var: "FAVE_CLIP_MAX_SECS",
                reason: "need 0 ≤ FAVE_CLIP_MIN_SECS ≤ FAVE_CLIP_MAX_SECS, and the maximum ≥ 1"
                    .into(),
            });
        }
        let frames_per_second: f64 = parse(lookup, "FAVE_FRAMES_PER_SEC", 1.0)?;
        if !(0.01..=30.0).contains(&frames_per_second) {
            return Err(ConfigError {
                var: "FAVE_FRAMES_PER_SEC",
                reason: "must be within 0.01..=30".into(),
            });
        }
        let pipeline = match lookup("FAVE_PIPELINE").as_deref() {
            None | Some("" | "video") => PipelineChoice::Video,
            Some("noop") => PipelineChoice::Noop {
                steps: parse(lookup, "FAVE_NOOP_STEPS", 5usize)?.clamp(1, 200),
                clips: parse(lookup, "FAVE_NOOP_CLIPS", 0usize)?.min(100_000),
                work_ms: parse(lookup, "FAVE_NOOP_WORK_MS", 0u64)?,
            },
            Some(_) => {
                return Err(ConfigError {
                    var: "FAVE_PIPELINE",
                    reason: "must be video or noop".into(),
                });
            }
        };
        let s3 = S3Settings::from_lookup(lookup)?;
        Ok(Self {
            listen: listen_addr(lookup)?,
            s3_inputs: s3_inputs(lookup, &s3.bucket)?,
            api_token: SecretStore::new(
                lookup("FAVE_SECRETS_DIR").unwrap_or_else(|| DEFAULT_SECRETS_DIR.to_owned()),
            )
            .get("fave-api-token", "FAVE_API_TOKEN", lookup),
            s3,
            gateway_url,
            max_concurrent_invocations,
            local_mode: parse_bool(lookup, "FAVE_LOCAL_MODE")?,
            max_input_bytes: parse(lookup, "FAVE_MAX_INPUT_BYTES", 2 * 1024 * 1024 * 1024u64)?,
            input_timeout: Duration::from_secs(parse(lookup, "FAVE_INPUT_TIMEOUT_SECS", 300u64)?),
            stage_timeout: Duration::from_secs(parse(lookup, "FAVE_STAGE_TIMEOUT_SECS", 600u64)?),
            body_limit: parse(lookup, "FAVE_BODY_LIMIT", 64 * 1024)?,
            replica_id: replica_id(lookup)?,
            lease_ttl: Duration::from_secs(parse(lookup, "FAVE_LEASE_SECS", 30u64)?.max(1)),
            resume_interval: Duration::from_millis(
                parse(lookup, "FAVE_RESUME_INTERVAL_MS", 5000u64)?.max(50),
            ),
            drain_window: Duration::from_secs(parse(lookup, "FAVE_DRAIN_SECS", 10u64)?),
            sync_window: Duration::from_secs(parse(lookup, "FAVE_SYNC_WINDOW_SECS", 300u64)?),
            async_hold: Duration::from_secs(parse(lookup, "FAVE_ASYNC_HOLD_SECS", 3600u64)?),
            platform_retry_window: Duration::from_secs(parse(
                lookup,
                "FAVE_PLATFORM_RETRY_SECS",
                300u64,
            )?),
            clip_min_s,
            clip_max_s,
            frames_per_second,
            pipeline,
            library: lookup("FAVE_LIBRARY").is_none() || parse_bool(lookup, "FAVE_LIBRARY")?,
            analysis_tag: analysis_tag(lookup)?,
            embed: lookup("FAVE_EMBED").is_none() || parse_bool(lookup, "FAVE_EMBED")?,
        })
    }
}

fn analysis_tag(lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let tag = lookup("FAVE_ANALYSIS_TAG").unwrap_or_default();
    if tag.len() > 200 || tag.chars().any(char::is_control) {
        return Err(ConfigError {
            var: "FAVE_ANALYSIS_TAG",
            reason: "at most 200 characters, none of them control characters".into(),
        });
    }
    Ok(tag)
}

fn replica_id(lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let id = lookup("FAVE_REPLICA_ID")
        .or_else(|| lookup("HOSTNAME"))
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("orchestrator-{}", uuid::Uuid::new_v4().simple()));
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError {
            var: "FAVE_REPLICA_ID",
            reason: "at most 128 printable ASCII characters".into(),
        });
    }
    Ok(id)
}

/// `FAVE_S3_INPUTS`: `bucket` or `bucket/prefix` entries, comma-separated; unset, the
/// artifacts bucket's `uploads/`.
fn s3_inputs(
    lookup: &dyn Fn(&str) -> Option<String>,
    artifacts: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(raw) = lookup("FAVE_S3_INPUTS").filter(|v| !v.trim().is_empty()) else {
        return Ok(vec![(artifacts.to_owned(), "uploads/".to_owned())]);
    };
    raw.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (bucket, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            let ok = !bucket.is_empty()
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
                && !prefix.split('/').any(|p| p == "..");
            match ok {
                true => Ok((bucket.to_owned(), prefix.to_owned())),
                false => Err(ConfigError {
                    var: "FAVE_S3_INPUTS",
                    reason: format!("{entry:?} is not `bucket` or `bucket/prefix`"),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use fave_common::config::lookup_in as lookup;

    use super::*;

    #[test]
    fn defaults_are_sane() {
        let c = OrchestratorConfig::from_lookup(&lookup(&[("FAVE_SECRETS_DIR", "/nonexistent")]))
            .unwrap();
        assert_eq!(c.s3.bucket, "fave-artifacts");
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.max_concurrent_invocations, 4);
        assert!(!c.local_mode);
        assert!(!c.s3.force_path_style);
        assert!(c.s3.access_key_id.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&str, &str)] = &[
            ("GATEWAY_URL", "not a url"),
            ("GATEWAY_URL", "ftp://x"),
            ("AWS_ENDPOINT_URL", "::"),
            ("MAX_CONCURRENT_INVOCATIONS", "0"),
            ("MAX_CONCURRENT_INVOCATIONS", "-3"),
            ("PORT", "70000"),
            ("FAVE_LOCAL_MODE", "maybe"),
            ("FAVE_BUCKET", "Bad_Bucket"),
            ("FAVE_BUCKET", "../x"),
            ("FAVE_CLIP_MIN_SECS", "five"),
            ("FAVE_CLIP_MAX_SECS", "0.5"),
            ("FAVE_CLIP_MAX_SECS", "3"),
            ("FAVE_FRAMES_PER_SEC", "0"),
        ];
        for (var, value) in cases {
            let err = OrchestratorConfig::from_lookup(&lookup(&[(var, value)])).unwrap_err();
            assert_eq!(&err.var, var, "{var}={value}");
        }
    }
}
