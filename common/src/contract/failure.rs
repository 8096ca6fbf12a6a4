//! Every code a request or a task can fail with, closed: each knows the HTTP status a
//! request that ended with it is answered with, and whether trying the same call again may
//! succeed. state.json and the answers carry the code as its string (`as_str`), which is
//! all the wire sees; a stage's own code that is not one of these is read as [`Other`].
//!
//! [`Other`]: FailureCode::Other

use std::fmt;

use http::StatusCode;

/// Why a request, or one of its tasks, failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureCode {
    // The input itself: final, the caller's to fix (422).
    /// The call's input is wrong (a key outside the request, a bad parameter).
    InvalidInput,
    /// Not a video ffmpeg can read, or one that names other files.
    InvalidMedia,
    /// A video beyond the deployment's limits (duration, frames, size, pixel rate).
    MediaOverLimit,
    /// An object the stage reads is not in the store.
    InputMissing,
    /// The `s3://` input named does not exist.
    InputNotFound,
    /// The input could not be fetched (its server refused or failed).
    InputUnreachable,
    /// The input is larger than the deployment takes.
    InputTooLarge,
    /// An `s3://` input outside `FAVE_S3_INPUTS`.
    ForbiddenInput,
    /// A URL that leads to an internal address.
    ForbiddenAddress,
    /// The video URI is not one fave takes.
    InvalidVideoUri,
    // The platform or the store: worth trying again (503, 502, 504).
    /// The store could not be reached or did not answer.
    StorageUnavailable,
    /// The function's model is still loading.
    ModelLoading,
    /// The work's claim could not be kept (the store was away): another call takes it on.
    ClaimLost,
    /// The gateway could not be reached.
    GatewayUnreachable,
    /// The stage did not answer within its timeout.
    StageTimeout,
    /// A 2xx whose body is not a complete manifest.
    BadStageAnswer,
    /// An answer whose result is larger than state.json holds of a stage.
    StageAnswerTooLarge,
    /// A manifest whose result is not the stage's contract `Output`: the function and the
    /// orchestrator are of different versions. Final: asking again gets the same answer.
    StageAnswerMismatch,
    /// An answer in no shape of fave's, by its HTTP status: `http_{status}`.
    Http(u16),
    // The request's own course.
    /// A task still in flight when its request failed or was cancelled.
    Abandoned,
    /// An attempt whose driver stopped before its answer was recorded.
    DriverLost,
    /// A request whose driver stopped before it ended.
    DriverInterrupted,
    /// The request was cancelled.
    Cancelled,
    /// A bug of fave's.
    Internal,
    /// A stage's own code that fave does not know; kept as it came.
    Other(String),
}

use FailureCode as F;

/// Every code with a fixed name, for tests and documentation.
pub const NAMED: [FailureCode; 23] = [
    F::InvalidInput,
    F::InvalidMedia,
    F::MediaOverLimit,
    F::InputMissing,
    F::InputNotFound,
    F::InputUnreachable,
    F::InputTooLarge,
    F::ForbiddenInput,
    F::ForbiddenAddress,
    F::InvalidVideoUri,
    F::StorageUnavailable,
    F::ModelLoading,
    F::ClaimLost,
    F::GatewayUnreachable,
    F::StageTimeout,
    F::BadStageAnswer,
    F::StageAnswerTooLarge,
    F::StageAnswerMismatch,
    F::Abandoned,
    F::DriverLost,
    F::DriverInterrupted,
    F::Cancelled,
    F::Internal,
];

impl FailureCode {
    /// The code as state.json and the answers carry it.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let name = match self {
            F::InvalidInput => "invalid_input",
            F::InvalidMedia => "invalid_media",
            F::MediaOverLimit => "media_over_limit",
            F::InputMissing => "input_missing",
            F::InputNotFound => "input_not_found",
            F::InputUnreachable => "input_unreachable",
            F::InputTooLarge => "input_too_large",
            F::ForbiddenInput => "forbidden_input",
            F::ForbiddenAddress => "forbidden_address",
            F::InvalidVideoUri => "invalid_video_uri",
            F::StorageUnavailable => "storage_unavailable",
            F::ModelLoading => "model_loading",
            F::ClaimLost => "claim_lost",
            F::GatewayUnreachable => "gateway_unreachable",
            F::StageTimeout => "stage_timeout",
            F::BadStageAnswer => "bad_stage_answer",
            F::StageAnswerTooLarge => "stage_answer_too_large",
            F::StageAnswerMismatch => "stage_answer_mismatch",
            F::Abandoned => "abandoned",
            F::DriverLost => "driver_lost",
            F::DriverInterrupted => "driver_interrupted",
            F::Cancelled => "cancelled",
            F::Internal => "internal",
            F::Http(status) => return format!("http_{status}").into(),
            F::Other(code) => return code.as_str().into(),
        };
        name.into()
    }

    /// The code a string names: a named one, `http_{status}`, else [`FailureCode::Other`].
    pub fn parse(code: &str) -> Self {
        if let Some(named) = NAMED.iter().find(|c| c.as_str() == code) {
            return named.clone();
        }
        match code.strip_prefix("http_").and_then(|s| s.parse().ok()) {
            Some(status) => F::Http(status),
            None => F::Other(code.to_owned()),
        }
    }

    /// The status a request that ended with this code is answered with: 422 for input a
    /// stage refused as the caller's to fix, 409 for a cancelled request, 503 while the store
    /// is away, and 502 for everything the stages or the platform failed (the request
    /// itself was accepted; what it depended on did not deliver).
    pub fn http_status(&self) -> StatusCode {
        match self {
            F::InvalidInput
            | F::InvalidMedia
            | F::MediaOverLimit
            | F::InputMissing
            | F::InputNotFound => StatusCode::UNPROCESSABLE_ENTITY,
            F::Cancelled => StatusCode::CONFLICT,
            F::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            F::InputUnreachable
            | F::InputTooLarge
            | F::ForbiddenInput
            | F::ForbiddenAddress
            | F::InvalidVideoUri
            | F::ModelLoading
            | F::ClaimLost
            | F::GatewayUnreachable
            | F::StageTimeout
            | F::BadStageAnswer
            | F::StageAnswerTooLarge
            | F::StageAnswerMismatch
            | F::Http(_)
            | F::Abandoned
            | F::DriverLost
            | F::DriverInterrupted
            | F::Internal
            | F::Other(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the same call may succeed if tried again later (a function's own 500 is
    /// given the benefit of the doubt: a full disk, a crashed child process).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            F::Internal
                | F::StorageUnavailable
                | F::ModelLoading
                | F::ClaimLost
                | F::GatewayUnreachable
                | F::StageTimeout
                | F::BadStageAnswer
                | F::DriverLost
                | F::DriverInterrupted
        ) || matches!(self, F::Http(s) if *s >= 500 || *s == 429)
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl From<FailureCode> for String {
    fn from(code: FailureCode) -> Self {
        code.as_str().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_code_reads_back_as_itself_and_has_one_status() {
        let mut names = std::collections::BTreeSet::new();
        for code in NAMED {
            let name = code.as_str().into_owned();
            assert!(names.insert(name.clone()), "{name} named twice");
            assert_eq!(FailureCode::parse(&name), code, "{name}");
            let status = code.http_status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{name}: {status}"
            );
            // A code a retry may cure is never the caller's to fix.
            assert!(
                !(code.is_retryable() && status == StatusCode::UNPROCESSABLE_ENTITY),
                "{name}"
            );
        }
        assert_eq!(FailureCode::parse("http_503"), F::Http(503));
        assert_eq!(F::Http(503).as_str(), "http_503");
        assert!(F::Http(503).is_retryable() && !F::Http(404).is_retryable());
        assert_eq!(
            FailureCode::parse("too_many_frames"),
            F::Other("too_many_frames".into())
        );
        assert_eq!(F::Other("x".into()).http_status(), StatusCode::BAD_GATEWAY);
    }
}
