//! The orchestrator's HTTP API, as the commands see it: one client built from `--gateway`,
//! answers classified once ([`Submitted`], [`ClientError`]), and the exit codes they map to.
//!
//! Every route is `{gateway}/function/orchestrator/…`, the same path a cluster's OpenFaaS
//! gateway serves, so the commands work against `fave up` and a cluster alike.

use std::time::Duration;

use clap::Args;
use fave_common::contract::api::RequestPage;
use fave_common::contract::library::{
    Deleted, QueryAnswer, QueryBody, Rebuilt, VideoDetail, VideoPage,
};
use fave_common::contract::report::Final;
use fave_common::error::ErrorBody;
use fave_common::ids::{RequestId, VideoId};
use fave_common::state::{RequestState, RequestStatus};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The exit codes every command uses.
pub mod exit {
    /// Everything asked for was done.
    pub const OK: u8 = 0;
    /// A request failed or was cancelled, or a batch had failed or bad lines.
    pub const FAILED: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// The gateway or the orchestrator refused the call, or could not be reached.
    pub const API: u8 = 3;
    /// Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// Where the orchestrator is: every API command takes this.
#[derive(Args, Clone, Debug)]
pub struct GatewayArgs {
    /// The OpenFaaS gateway (or `fave up`'s local one).
    #[arg(
        long,
        env = "OPENFAAS_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub gateway: String,
    /// The orchestrator's API token, when it requires one (its `fave-api-token` secret).
    #[arg(
        long,
        env = "FAVE_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// How a call to the API went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP answer at all: nothing listens, DNS, a reset, a timeout.
    #[error(
        "cannot reach the gateway at {url}: {} (is the stack up? `fave up`)",
        chain(source)
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer in the API's error shape (or something else that is not a success).
    #[error("{code}: {message} (HTTP {status})")]
    Refused {
        status: u16,
        code: String,
        message: String,
        retryable: bool,
        /// The answer as it came, for `--json`.
        body: Value,
    },
}

impl ClientError {
    /// Whether the same call may succeed later: the gateway was unreachable, or it said so.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused {
                status, retryable, ..
            } => *retryable || matches!(status, 429 | 502 | 503 | 504),
        }
    }

    /// The error as JSON, for `--json` and results files: the API's own body when there was
    /// one, else the same shape.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Refused { body, .. } if body.get("error").is_some() => body.clone(),
            Self::Refused {
                code,
                message,
                retryable,
                ..
            } => json!({"error": {"code": code, "message": message, "retryable": retryable}}),
            Self::Unreachable { .. } => json!({"error": {
                "code": "gateway_unreachable",
                "message": self.to_string(),
                "retryable": true,
            }}),
        }
    }

    /// `{code, message}` for a results line.
    pub fn detail(&self) -> Value {
        let all = self.to_json();
        json!({"code": all["error"]["code"], "message": all["error"]["message"]})
    }

    /// Prints the error for a person (stderr) and, with `--json`, the API's body (stdout).
    /// Returns exit code 3.
    pub fn report(&self, json_output: bool) -> u8 {
        if json_output {
            println!("{}", pretty(&self.to_json()));
        }
        eprintln!("error: {self}");
        exit::API
    }
}

/// An answer of the API, whatever its status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// `X-Fave-Request-Id`, set on submissions that named a request.
    pub request_id: Option<String>,
}

impl Answer {
    fn success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer as an error: the API's `error.code` and `message` when it has them.
    fn into_error(self) -> ClientError {
        let parsed = serde_json::from_value::<ErrorBody>(self.body.clone()).ok();
        let (code, message, retryable) = match parsed {
            Some(ErrorBody { error, .. }) => (error.code, error.message, error.retryable),
            None => (
                format!("http_{}", self.status),
                match &self.body {
                    Value::String(s) if !s.is_empty() => s.chars().take(300).collect(),
                    Value::Null => "an empty answer".to_owned(),
                    other => other.to_string().chars().take(300).collect(),
                },
                self.status >= 500,
            ),
        };
        ClientError::Refused {
            status: self.status,
            code,
            message,
            retryable,
            body: self.body,
        }
    }
}

/// What `POST /` asks for.
pub use fave_common::contract::api::SubmitBody as Submission;

/// How a submission was answered.
#[derive(Debug)]
pub enum Submitted {
    /// It ran to the end within the orchestrator's sync window: `final.json`.
    Completed { id: String, result: Value },
    /// Accepted and still running: poll it.
    Accepted { id: String, body: Value },
    /// It ran and ended FAILED or CANCELLED within the sync window.
    Ended {
        id: String,
        status: RequestStatus,
        body: Value,
    },
}

/// The orchestrator behind one gateway.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

/// How long one call may take: a submission may be held for the whole sync window
/// (`FAVE_SYNC_WINDOW_SECS`, 300 s by default) and the input copy before it.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    pub fn new(args: &GatewayArgs) -> anyhow::Result<Self> {
        let gateway = url::Url::parse(&args.gateway)
            .map_err(|e| anyhow::anyhow!("--gateway {:?} is not a URL: {e}", args.gateway))?;
        if !matches!(gateway.scheme(), "http" | "https") {
            anyhow::bail!("--gateway {gateway} must be an http(s) URL");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow::anyhow!("--token must be printable ASCII"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("fave-cli/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()?;
        Ok(Self {
            http,
            base: format!(
                "{}/function/orchestrator",
                gateway.as_str().trim_end_matches('/')
            ),
        })
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        url: String,
    ) -> Result<Answer, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-fave-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer {
            status,
            body,
            request_id,
        })
    }

    /// `GET {path}` (relative to the orchestrator), any status.
    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        self.call(self.http.get(&url).timeout(CALL_TIMEOUT), url)
            .await
    }

    /// `POST {path}` with no body, any status.
    pub async fn post(&self, path: &str) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        self.call(self.http.post(&url).timeout(CALL_TIMEOUT), url)
            .await
    }

    /// A 2xx answer's body, or the answer as an error.
    async fn ok(&self, answer: Result<Answer, ClientError>) -> Result<Value, ClientError> {
        let answer = answer?;
        if answer.success() {
            Ok(answer.body)
        } else {
            Err(answer.into_error())
        }
    }

    /// `POST /`, with an `Idempotency-Key` when given.
    /// `POST /`. With `respond_async`, `Prefer: respond-async` asks for 202 as soon as the
    /// request is accepted; without, the orchestrator answers within its sync window.
    pub async fn submit(
        &self,
        submission: &Submission,
        key: Option<&str>,
        respond_async: bool,
    ) -> Result<Submitted, ClientError> {
        let url = self.base.clone();
        let mut request = self
            .http
            .post(&url)
            .json(submission)
            .timeout(SUBMIT_TIMEOUT);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if respond_async {
            request = request.header("Prefer", "respond-async");
        }
        let answer = self.call(request, url).await?;
        classify(answer)
    }

    /// `GET /requests/{id}`: the raw `state.json`, and its typed form.
    pub async fn state(&self, id: &RequestId) -> Result<(Value, RequestState), ClientError> {
        let raw = self.ok(self.get(&format!("/requests/{id}")).await).await?;
        let state = serde_json::from_value(raw.clone()).map_err(|e| ClientError::Refused {
            status: 200,
            code: "unexpected_answer".into(),
            message: format!("the state of {id} is not a state.json this fave reads: {e}"),
            retryable: false,
            body: raw.clone(),
        })?;
        Ok((raw, state))
    }

    /// `GET /requests/{id}/result`: `final.json` as sent; [`typed`] reads it as a `Final`
    /// where it is looked into.
    pub async fn result(&self, id: &RequestId) -> Result<Value, ClientError> {
        self.ok(self.get(&format!("/requests/{id}/result")).await)
            .await
    }

    /// `GET /requests?status=&limit=&cursor=`: one page.
    pub async fn list(
        &self,
        status: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<RequestPage, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = status {
            query.push(("status", s.to_owned()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let url = format!("{}/requests", self.base);
        let request = self.http.get(&url).query(&query).timeout(CALL_TIMEOUT);
        let page = self.ok(self.call(request, url).await).await?;
        typed(&page, "a page of requests")
    }

    /// `POST /requests/{id}/cancel`.
    pub async fn cancel(&self, id: &RequestId) -> Result<Value, ClientError> {
        self.ok(self.post(&format!("/requests/{id}/cancel")).await)
            .await
    }

    /// `POST /requests/{id}/resume`.
    pub async fn resume(&self, id: &RequestId) -> Result<Value, ClientError> {
        self.ok(self.post(&format!("/requests/{id}/resume")).await)
            .await
    }

    /// `POST /query`: moments across the library.
    pub async fn query(&self, body: &QueryBody) -> Result<QueryAnswer, ClientError> {
        let url = format!("{}/query", self.base);
        let request = self.http.post(&url).json(body).timeout(CALL_TIMEOUT);
        let answer = self.ok(self.call(request, url).await).await?;
        typed(&answer, "a query's answer")
    }

    /// `GET /videos?limit=&cursor=`: one page of the library.
    pub async fn videos(
        &self,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<VideoPage, ClientError> {
        let mut query = Vec::new();
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let url = format!("{}/videos", self.base);
        let request = self.http.get(&url).query(&query).timeout(CALL_TIMEOUT);
        let page = self.ok(self.call(request, url).await).await?;
        typed(&page, "a page of videos")
    }

    /// `GET /videos/{id}`.
    pub async fn video(&self, id: &VideoId) -> Result<VideoDetail, ClientError> {
        let detail = self.ok(self.get(&format!("/videos/{id}")).await).await?;
        typed(&detail, "a video")
    }

    /// `POST /videos/rebuild`.
    pub async fn rebuild_library(&self) -> Result<Rebuilt, ClientError> {
        let rebuilt = self.ok(self.post("/videos/rebuild").await).await?;
        typed(&rebuilt, "a rebuilt library")
    }

    /// `DELETE /videos/{id}`.
    pub async fn delete_video(&self, id: &VideoId) -> Result<Deleted, ClientError> {
        let url = format!("{}/videos/{id}", self.base);
        let request = self.http.delete(&url).timeout(CALL_TIMEOUT);
        let deleted = self.ok(self.call(request, url).await).await?;
        typed(&deleted, "a deleted video")
    }

    /// Polls `GET /requests/{id}` until the request ends, calling `seen` with each state.
    /// A few failed polls in a row are tolerated (a gateway restarting); more are an error.
    pub async fn wait(
        &self,
        id: &RequestId,
        interval: Duration,
        mut seen: impl FnMut(&RequestState),
    ) -> Result<(Value, RequestState), ClientError> {
        let mut failures = 0;
        loop {
            match self.state(id).await {
                Ok((raw, state)) => {
                    failures = 0;
                    seen(&state);
                    if state.status.is_terminal() {
                        return Ok((raw, state));
                    }
                }
                Err(e) if e.is_transient() && failures < 10 => failures += 1,
                Err(e) => return Err(e),
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Sorts a submission's answer into [`Submitted`] or an error. A non-2xx answer that names
/// a request and its terminal status is the request's own end (it ran and failed), not a
/// refusal of the submission.
fn classify(answer: Answer) -> Result<Submitted, ClientError> {
    let id = answer
        .request_id
        .clone()
        .or_else(|| answer.body["request_id"].as_str().map(str::to_owned));
    let status: Option<RequestStatus> = serde_json::from_value(answer.body["status"].clone()).ok();
    match (answer.status, id, status) {
        (200, Some(id), _) => Ok(Submitted::Completed {
            id,
            result: answer.body,
        }),
        (202, Some(id), _) => Ok(Submitted::Accepted {
            id,
            body: answer.body,
        }),
        (_, Some(id), Some(status)) if status.is_terminal() && !answer.success() => {
            Ok(Submitted::Ended {
                id,
                status,
                body: answer.body,
            })
        }
        _ if answer.success() => Err(ClientError::Refused {
            status: answer.status,
            code: "unexpected_answer".into(),
            message: "the orchestrator answered without a request id".into(),
            retryable: false,
            body: answer.body,
        }),
        _ => Err(answer.into_error()),
    }
}

/// An answer's body as the contract's type `T`; `what` names it in the error.
pub fn typed<T: DeserializeOwned>(body: &Value, what: &str) -> Result<T, ClientError> {
    T::deserialize(body).map_err(|e| ClientError::Refused {
        status: 200,
        code: "unexpected_answer".into(),
        message: format!("{what} is not what this fave reads: {e}"),
        retryable: false,
        body: body.clone(),
    })
}

/// A submission from the command line's words: a local path made a file:// URI, a profile
/// by its name.
pub fn submission(
    video: &str,
    query: Option<String>,
    profile: Option<&str>,
) -> anyhow::Result<Submission> {
    Ok(Submission {
        video_uri: crate::stack::to_uri(video)?,
        query,
        profile: profile
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        callback_url: None,
        fresh: false,
    })
}

/// Submits one video to the orchestrator behind `gateway` and waits for its end within
/// the sync window: `final.json`, or an error saying how the request ended (the demo and
/// the benchmarks, against a stack of their own).
pub async fn run_once(gateway: &str, submission: &Submission) -> anyhow::Result<Final> {
    let client = Client::new(&GatewayArgs {
        gateway: gateway.to_owned(),
        token: None,
    })?;
    match client.submit(submission, None, false).await? {
        Submitted::Completed { result, .. } => Ok(typed(&result, "final.json")?),
        Submitted::Accepted { id, .. } => {
            anyhow::bail!("request {id} is still running after the sync window")
        }
        Submitted::Ended { id, status, body } => {
            anyhow::bail!("request {id} ended {status:?}: {}", pretty(&body))
        }
    }
}

/// Parses a request id given on the command line (the same rules the orchestrator applies,
/// so a hostile one never reaches a URL).
pub fn request_id(raw: &str) -> Result<RequestId, String> {
    raw.parse()
        .map_err(|e: fave_common::ids::InvalidId| e.to_string())
}

/// An error and its causes on one line: reqwest's own message leaves out the cause
/// ("connection refused", a DNS failure) that a person needs.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value, header: Option<&str>) -> Answer {
        Answer {
            status,
            body,
            request_id: header.map(str::to_owned),
        }
    }

    #[test]
    fn a_submission_answer_is_a_result_a_running_request_an_end_or_a_refusal() {
        let done = classify(answer(200, json!({"request_id": "a"}), Some("a"))).unwrap();
        assert!(matches!(done, Submitted::Completed { ref id, .. } if id == "a"));
        let running = classify(answer(202, json!({"request_id": "b"}), Some("b"))).unwrap();
        assert!(matches!(running, Submitted::Accepted { ref id, .. } if id == "b"));
        let failed = classify(answer(
            422,
            json!({"request_id": "c", "status": "FAILED", "error": {"code": "invalid_media", "message": "m", "retryable": false}}),
            Some("c"),
        ))
        .unwrap();
        assert!(matches!(
            failed,
            Submitted::Ended {
                status: RequestStatus::Failed,
                ..
            }
        ));
        let refused = classify(answer(
            422,
            json!({"error": {"code": "invalid_video_uri", "message": "ftp", "retryable": false}}),
            None,
        ))
        .unwrap_err();
        assert!(
            matches!(&refused, ClientError::Refused { code, status: 422, .. } if code == "invalid_video_uri")
        );
        assert!(!refused.is_transient());
        let busy = classify(answer(503, Value::String("busy".into()), None)).unwrap_err();
        assert!(busy.is_transient());
        assert_eq!(busy.detail()["code"], "http_503");
    }
}
