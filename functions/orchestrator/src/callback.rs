//! fave's own callback: when a request with a `callback_url` ends, its result (final.json,
//! or the failure in the one error shape) is POSTed there, at least once.
//!
//! A request whose callback is still due stays in the active index, so a replica that dies
//! before delivering leaves it to the resumer, which delivers it. Each attempt is recorded
//! in `state.json` (`callback`: attempts, last status or error, delivered or given up).
//! Connect errors, timeouts, 408, 429 and 5xx are tried again with backoff; any other
//! answer, or a URL the SSRF guard refuses, ends delivery for good. The receiver can tell
//! repeats apart by `X-Fave-Request-Id`.

use std::time::Duration;

use chrono::Utc;
use fave_common::ids::RequestId;
use fave_common::keys::RequestKeys;
use fave_common::retry::RetryPolicy;
use fave_common::state::{CallbackDelivery, RequestState, RequestStatus};
use fave_common::storage::Storage;
use serde_json::{Value, json};

use crate::record::{self, DriveError, LeaseHolder, Tracked};

/// Attempts at delivery and the waits between them (≈ 1 minute in all).
pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(15),
    jitter: true,
};

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers the callback of ended request `id`, if it has one still due, then takes the
/// request out of the active index.
///
/// Every replica may try (the resumer finds the request on each), so each attempt is
/// recorded in `state.json` before it is sent, with the time it may take
/// (`sending_until`): a replica that finds an attempt under way leaves it be, and the count
/// of attempts and the time of the next (`next_at`) are the request's, not a replica's.
pub async fn deliver(
    storage: &Storage,
    clients: &crate::guard::UserClients,
    holder: &LeaseHolder,
    id: &RequestId,
) -> Result<(), DriveError> {
    loop {
        let Some(mut t) = Tracked::load(storage.clone(), id, holder.clone()).await? else {
            return Ok(());
        };
        if !t.state.callback_pending() {
            break;
        }
        let mut record = t.state.callback.clone().unwrap_or_default();
        let now = Utc::now();
        if record.sending_until.is_some_and(|until| until > now) {
            // Another replica's attempt is under way: it records how it went.
            return Ok(());
        }
        if let Some(wait) = record.next_at.and_then(|at| (at - now).to_std().ok()) {
            tokio::time::sleep(wait).await;
            continue;
        }
        if record.attempts >= POLICY.max_attempts {
            // A replica died after the last attempt, before recording that it gave up.
            record.gave_up = true;
            t.state.callback = Some(record);
            match t.commit().await {
                Err(DriveError::Superseded) => continue,
                other => other?,
            }
            break;
        }
        record.attempts += 1;
        record.sending_until = Some(now + ATTEMPT_TIMEOUT + ATTEMPT_MARGIN);
        record.next_at = None;
        t.state.callback = Some(record.clone());
        // Losing this write means another replica moved first: read again.
        match t.commit().await {
            Err(DriveError::Superseded) => continue,
            other => other?,
        }
        let again = attempt(storage, clients, &t.state, id, &mut record).await?;
        record.sending_until = None;
        let delay = if again {
            POLICY.delays().nth(record.attempts as usize - 1)
        } else {
            None
        };
        record.next_at = delay.map(|d| Utc::now() + d);
        record.gave_up = record.delivered_at.is_none() && delay.is_none();
        let (delivered, gave_up) = (record.delivered_at.is_some(), record.gave_up);
        t.state.callback = Some(record);
        match t.commit().await {
            // Only this replica writes while its attempt is recorded as under way; a lost
            // write means its attempt outlived `sending_until`: read again.
            Err(DriveError::Superseded) => continue,
            other => other?,
        }
        if gave_up && !delivered {
            tracing::warn!(request_id = %id, "callback not delivered; giving up");
        }
    }
    record::leave_index(storage, id).await?;
    Ok(())
}

/// Room beyond an attempt's own timeout before other replicas take its silence for death.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(5);

/// One attempt at delivery, recorded in `record`; whether another should follow.
async fn attempt(
    storage: &Storage,
    clients: &crate::guard::UserClients,
    state: &RequestState,
    id: &RequestId,
    record: &mut CallbackDelivery,
) -> Result<bool, DriveError> {
    let shown = state.submission.callback_url.clone().unwrap_or_default();
    let url = crate::credentials::callback_url(storage, id, &shown).await?;
    // Guarded as the request was accepted, whatever this replica's mode; an address
    // written in the URL is judged here, since it is never resolved. A refusal is final.
    let (http, allow_internal) = clients.for_reach(state.submission.reach);
    let checked = url::Url::parse(&url)
        .map_err(|e| e.to_string())
        .and_then(|u| crate::guard::check_url(&u, allow_internal).map_err(|e| e.to_string()));
    if let Err(reason) = checked {
        record.last_status = None;
        record.last_error = Some(reason);
        return Ok(false);
    }
    let body = payload(storage, state).await?;
    let sent = http
        .post(&url)
        .header("x-fave-request-id", id.as_str())
        .header("x-fave-status", state.status.as_str())
        .json(&body)
        .timeout(ATTEMPT_TIMEOUT)
        .send()
        .await;
    Ok(match sent {
        Ok(answer) if answer.status().is_success() => {
            record.delivered_at = Some(Utc::now());
            record.last_status = Some(answer.status().as_u16());
            record.last_error = None;
            false
        }
        Ok(answer) => {
            let status = answer.status().as_u16();
            record.last_status = Some(status);
            record.last_error = Some(format!("the receiver answered {status}"));
            status >= 500 || status == 408 || status == 429
        }
        Err(e) => {
            // Connect, timeout, or the guard refusing what a name resolved to.
            let forbidden = crate::guard::forbidden_in(&e);
            record.last_status = None;
            record.last_error = Some(match &forbidden {
                Some(f) => f.to_string(),
                None => format!("sending: {}", e.without_url()),
            });
            forbidden.is_none()
        }
    })
}

/// What the receiver gets: final.json, or the failure in the one error shape.
async fn payload(storage: &Storage, state: &RequestState) -> Result<Value, DriveError> {
    if state.status == RequestStatus::Completed {
        let key = state
            .result_key
            .clone()
            .unwrap_or_else(|| RequestKeys::new(&state.request_id).result());
        if let Some((result, _)) = storage.get_json::<Value>(&key).await? {
            return Ok(result);
        }
    }
    let (code, message) = state.failure.as_ref().map_or_else(
        || {
            (
                fave_common::contract::FailureCode::Cancelled.into(),
                "the request was cancelled".to_owned(),
            )
        },
        |f| (f.error_code.clone(), f.error_detail.clone()),
    );
    Ok(json!({
        "request_id": state.request_id,
        "status": state.status,
        "error": {"code": code, "message": message, "retryable": false},
    }))
}

/// Checks a `callback_url` at submission: http(s), not too long, and (outside local mode)
/// not an internal address.
pub fn check(raw: &str, local_mode: bool) -> Result<(), fave_common::error::ApiError> {
    use fave_common::error::ApiError;
    let invalid = |m: String| ApiError::unprocessable("invalid_callback_url", m);
    if raw.len() > crate::input::MAX_URI_LEN {
        return Err(invalid(format!(
            "callback_url is longer than {} characters",
            crate::input::MAX_URI_LEN
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid("callback_url contains control characters".into()));
    }
    if crate::guard::is_ambiguous(raw) {
        return Err(invalid(
            "callback_url contains a backslash, which URL parsers read differently".into(),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| invalid(format!("callback_url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("callback_url must be http(s)".into()));
    }
    crate::guard::check_url(&url, local_mode)
        .map_err(|e| ApiError::unprocessable("forbidden_address", format!("callback_url: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_are_checked() {
        assert!(check("https://hooks.example.com/fave", false).is_ok());
        assert!(check("http://127.0.0.1:9/done", true).is_ok(), "local mode");
        for (raw, code) in [
            ("ftp://example.com/x", "invalid_callback_url"),
            ("not a url", "invalid_callback_url"),
            ("http://169.254.169.254/", "forbidden_address"),
            ("http://127.0.0.1:9/done", "forbidden_address"),
            (
                "http://hooks.example.com\\@127.0.0.1/done",
                "invalid_callback_url",
            ),
            (
                "http://hooks.example.com\\@[64:ff9b::7f00:1]/",
                "invalid_callback_url",
            ),
            ("http://[64:ff9b::a9fe:a9fe]/", "forbidden_address"),
        ] {
            assert_eq!(check(raw, false).unwrap_err().code, code, "{raw}");
        }
        let long = format!("https://example.com/{}", "a".repeat(3000));
        assert_eq!(
            check(&long, false).unwrap_err().code,
            "invalid_callback_url"
        );
    }
}
