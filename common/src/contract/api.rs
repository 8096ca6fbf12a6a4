//! The orchestrator's API bodies, as its routes write them and the CLI reads them. A
//! completed request's answer is `final.json` ([`super::report::Final`]); a failed one's is
//! the one error shape ([`crate::error::ErrorBody`]) with the request's id and status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::RequestId;
use crate::state::{Profile, RequestStatus};

/// The body of `POST /`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub video_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Where the result is POSTed when the request ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Analyse the video again even when the library has an analysis of it with the same
    /// parameters (a benchmark's runs; the library keeps the analysis it had).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

/// 202: a request accepted and still running; poll `status_url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub status_url: String,
}

/// A page of `GET /requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPage {
    pub requests: Vec<RequestSummary>,
    /// Set while more may follow: the `cursor` of the next page.
    pub next_cursor: Option<String>,
}

/// A request as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    pub request_id: RequestId,
    pub status: RequestStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub video_uri: String,
    pub query: Option<String>,
    pub profile: Profile,
    pub error_code: Option<String>,
}

/// The answer to `POST /requests/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub request_id: RequestId,
    pub status: RequestStatus,
}
