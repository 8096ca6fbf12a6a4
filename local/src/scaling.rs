//! A function's scaling settings, read from the labels OpenFaaS reads:
//!
//! | label | default | meaning |
//! |---|---|---|
//! | `com.openfaas.scale.min` | 1 | replicas started at deploy; 0 allowed (scale from zero on the first call) |
//! | `com.openfaas.scale.max` | 20 | the most replicas `scale-function` sets |
//! | `com.openfaas.scale.zero` | false | scale to zero after `zero-duration` without calls |
//! | `com.openfaas.scale.zero-duration` | 15m | a Go duration: `15m`, `2s`, `1m30s` |
//!
//! Values are parsed as Go parses them (`strconv.ParseBool`, `time.ParseDuration`), so the
//! same stack.yml means the same thing on a cluster. An empty value (a `${VAR}` that was not
//! set) counts as absent.

use std::collections::BTreeMap;
use std::time::Duration;

pub const MIN_LABEL: &str = "com.openfaas.scale.min";
pub const MAX_LABEL: &str = "com.openfaas.scale.max";
pub const ZERO_LABEL: &str = "com.openfaas.scale.zero";
pub const ZERO_DURATION_LABEL: &str = "com.openfaas.scale.zero-duration";

/// OpenFaaS's default `com.openfaas.scale.max` for its autoscaler.
pub const DEFAULT_MAX: usize = 20;
/// OpenFaaS's default idle time before scaling to zero.
pub const DEFAULT_ZERO_DURATION: Duration = Duration::from_secs(15 * 60);
/// The most replicas of one function this machine is asked to run.
pub const LOCAL_MAX: usize = 100;

/// A label with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {label}={value:?}: {reason}")]
pub struct ScaleLabelError {
    pub label: &'static str,
    pub value: String,
    pub reason: String,
}

/// How one function scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePolicy {
    pub min: usize,
    pub max: usize,
    pub zero: bool,
    pub zero_duration: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        Self {
            min: 1,
            max: DEFAULT_MAX,
            zero: false,
            zero_duration: DEFAULT_ZERO_DURATION,
        }
    }
}

impl ScalePolicy {
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Self, ScaleLabelError> {
        let get = |label: &'static str| {
            labels
                .get(label)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (label, v))
        };
        let err = |label: &'static str, value: &str, reason: String| ScaleLabelError {
            label,
            value: value.to_owned(),
            reason,
        };
        let count = |(label, value): (&'static str, &str)| {
            value
                .parse::<usize>()
                .map_err(|e| err(label, value, format!("not a replica count: {e}")))
        };
        let defaults = Self::default();
        let min = get(MIN_LABEL)
            .map(count)
            .transpose()?
            .unwrap_or(defaults.min);
        let max = get(MAX_LABEL)
            .map(count)
            .transpose()?
            .unwrap_or(defaults.max);
        if let Some((label, value)) = get(MAX_LABEL)
            && !(1..=LOCAL_MAX).contains(&max)
        {
            return Err(err(label, value, format!("must be 1..={LOCAL_MAX}")));
        }
        if min > max {
            let value = get(MIN_LABEL).map_or("", |(_, v)| v);
            return Err(err(MIN_LABEL, value, format!("above the maximum {max}")));
        }
        let zero = match get(ZERO_LABEL) {
            None => defaults.zero,
            Some((label, value)) => {
                parse_go_bool(value).ok_or_else(|| err(label, value, "not a boolean".into()))?
            }
        };
        let zero_duration = match get(ZERO_DURATION_LABEL) {
            None => defaults.zero_duration,
            Some((label, value)) => {
                parse_go_duration(value).map_err(|reason| err(label, value, reason))?
            }
        };
        Ok(Self {
            min,
            max,
            zero,
            zero_duration,
        })
    }

    /// How many replicas a call to a function at zero starts: `min`, at least one, as
    /// OpenFaaS's gateway does in `scale_from_zero`.
    pub fn from_zero_target(&self) -> usize {
        self.min.max(1).min(self.max)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative durations: a sequence of decimal numbers,
/// each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such
/// as `15m`, `2s`, `1m30s` or `1.5h`; a bare `0` is zero.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let input = s.strip_prefix('+').unwrap_or(s);
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    if input.is_empty() || input.starts_with('-') {
        return Err(format!("{s:?} is not a non-negative Go duration"));
    }
    let mut rest = input;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!("{s:?}: expected a number at {rest:?}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{s:?}: bad number {number:?}"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("{s:?}: missing unit after {number}")),
            other => return Err(format!("{s:?}: unknown unit {other:?}")),
        };
        total += value * seconds;
        rest = after;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn go_durations() {
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(d("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        for bad in ["", "15", "1x", "-1s", "s", "1..2s", "1m30"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_and_defaults() {
        assert_eq!(
            ScalePolicy::from_labels(&labels(&[])),
            Ok(ScalePolicy::default())
        );
        let cold = ScalePolicy::from_labels(&labels(&[
            (MIN_LABEL, "0"),
            (MAX_LABEL, "4"),
            (ZERO_LABEL, "true"),
            (ZERO_DURATION_LABEL, "2s"),
        ]))
        .unwrap();
        assert_eq!(
            cold,
            ScalePolicy {
                min: 0,
                max: 4,
                zero: true,
                zero_duration: Duration::from_secs(2)
            }
        );
        assert_eq!(cold.from_zero_target(), 1);
        let empty = ScalePolicy::from_labels(&labels(&[(MIN_LABEL, ""), (ZERO_LABEL, " ")]));
        assert_eq!(empty, Ok(ScalePolicy::default()), "empty values are absent");
        let warm = ScalePolicy::from_labels(&labels(&[(MIN_LABEL, "2")])).unwrap();
        assert_eq!(warm.from_zero_target(), 2);
    }

    #[test]
    fn bad_labels_say_which() {
        for (label, value) in [
            (MIN_LABEL, "-1"),
            (MIN_LABEL, "one"),
            (MAX_LABEL, "0"),
            (MAX_LABEL, "100000"),
            (ZERO_LABEL, "yes"),
            (ZERO_DURATION_LABEL, "15 minutes"),
        ] {
            let e = ScalePolicy::from_labels(&labels(&[(label, value)])).unwrap_err();
            assert_eq!(e.label, label);
        }
        let e =
            ScalePolicy::from_labels(&labels(&[(MIN_LABEL, "5"), (MAX_LABEL, "2")])).unwrap_err();
        assert_eq!(e.label, MIN_LABEL);
    }
}
