//! Property tests of the two parsers hostile input meets first: the submission parser
//! (`POST /`'s body, through [`parse_json`] and [`validate`]) and the id parser (every
//! `/requests/{id}` path). Whatever the input, each answers with a value or a 4xx error
//! with a known code — never a panic, never a 5xx — and what they accept is safe to use.

use std::net::IpAddr;

use fave_common::error::{ApiError, parse_json};
use fave_common::ids::RequestId;
use fave_common::keys::RequestKeys;
use orchestrator::api::submit::{SubmitBody, validate};
use orchestrator::input::Source;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Every code a rejected submission may carry before anything is fetched.
const SUBMIT_CODES: &[&str] = &[
    "malformed_json",
    "invalid_request",
    "invalid_query",
    "invalid_video_uri",
    "invalid_callback_url",
    "forbidden_address",
];

/// Parses and validates a body as `POST /` does, in cluster mode (the SSRF guard on).
fn submit(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse_json::<SubmitBody>(bytes).and_then(|b| validate(b, false)) {
        Ok((submission, source)) => {
            prop_assert!(submission.video_uri.len() <= orchestrator::input::MAX_URI_LEN);
            prop_assert!(
                !submission.video_uri.chars().any(char::is_control),
                "a control character got through"
            );
            match source {
                Source::File(_) => prop_assert!(false, "file:// accepted in cluster mode"),
                Source::Http(url) => prop_assert!(public(url.host()), "internal host in {url}"),
                Source::S3 { bucket, key } => {
                    prop_assert!(!bucket.is_empty() && !key.is_empty())
                }
            }
        }
        Err(e) => rejected(&e)?,
    }
    Ok(())
}

fn rejected(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(e.status.is_client_error(), "{e}");
    prop_assert!(SUBMIT_CODES.contains(&e.code), "unexpected code {}", e.code);
    prop_assert!(!e.message.is_empty());
    // A hostile megabyte is never echoed back whole.
    prop_assert!(
        e.message.len() < 4096,
        "{} bytes of message",
        e.message.len()
    );
    Ok(())
}

/// An oracle independent of the guard's own classifier: std's address predicates.
fn public(host: Option<url::Host<&str>>) -> bool {
    let ip = match host {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        Some(url::Host::Domain(d)) => {
            return !d.trim_end_matches('.').eq_ignore_ascii_case("localhost");
        }
        None => return false,
    };
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast())
        }
        IpAddr::V6(a) => !(a.is_loopback() || a.is_unspecified() || a.is_multicast()),
    }
}

/// URI-shaped strings: known and odd schemes, hosts that are names, literals in every
/// spelling the guard must see through, ports, paths, queries, stray characters.
fn uri() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "http", "https", "s3", "file", "ftp", "gopher", "HTTP", "data", "",
    ]);
    let host = prop_oneof![
        prop::sample::select(vec![
            "example.com",
            "localhost",
            "LOCALHOST.",
            "127.0.0.1",
            "127.1",
            "0x7f000001",
            "2130706433",
            "0177.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "192.168.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[fe80::1]",
            "8.8.8.8",
            "bucket",
            "",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9.-]{0,20}",
    ];
    let port = prop::option::of(0u32..70000);
    let path = "(/[a-zA-Z0-9._%~-]{0,12}){0,4}";
    let tail = prop::option::of("[?#][ -~]{0,20}");
    let userinfo = prop::option::of("[a-z]{1,5}(:[a-z0-9]{0,8})?@");
    (scheme, userinfo, host, port, path, tail).prop_map(|(s, u, h, p, path, tail)| {
        let port = p.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{s}://{}{h}{port}{path}{}",
            u.unwrap_or_default(),
            tail.unwrap_or_default()
        )
    })
}

/// JSON values whose objects often use the real field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        uri().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec!["video_uri", "query", "profile", "callback_url"])
                .prop_map(str::to_owned),
            "[a-z_]{0,10}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_bytes_are_parsed_or_refused_with_a_4xx(
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        submit(&bytes)?;
    }

    #[test]
    fn any_json_is_parsed_or_refused_with_a_4xx(body in json_value()) {
        submit(body.to_string().as_bytes())?;
    }

    #[test]
    fn well_formed_submissions_with_hostile_fields(
        video_uri in prop_oneof![uri(), ".{0,64}"],
        query in prop::option::of(".{0,64}"),
        profile in prop::option::of(prop::sample::select(vec!["cold", "warm", "hot", ""])),
        callback_url in prop::option::of(uri()),
    ) {
        let mut body = serde_json::json!({ "video_uri": video_uri });
        if let Some(q) = query { body["query"] = q.into(); }
        if let Some(p) = profile { body["profile"] = p.into(); }
        if let Some(c) = callback_url { body["callback_url"] = c.into(); }
        submit(body.to_string().as_bytes())?;
    }

    #[test]
    fn request_ids_are_parsed_or_refused(raw in prop_oneof![".{0,80}", "[a-f0-9./%_-]{0,70}"]) {
        match raw.parse::<RequestId>() {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), raw.as_str());
                prop_assert!((1..=64).contains(&raw.len()));
                prop_assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                // The keys it names stay inside the request's own prefix.
                let state = RequestKeys::new(&id).state();
                prop_assert_eq!(state, format!("requests/{raw}/metadata/state.json"));
            }
            Err(e) => {
                prop_assert!(e.shown.chars().count() <= 80);
                prop_assert!(!e.reason.is_empty());
            }
        }
    }

    #[test]
    fn every_well_formed_id_is_accepted(raw in "[A-Za-z0-9_-]{1,64}") {
        prop_assert!(raw.parse::<RequestId>().is_ok());
    }
}
