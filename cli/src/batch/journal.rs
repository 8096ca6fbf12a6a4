//! The journal: what earlier runs of the batch did, and the events this run adds to it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::term::{Paint, Palette};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Written once, when the journal is created.
    Batch { identity: String, at: DateTime<Utc> },
    /// The orchestrator accepted the line's submission as this request.
    Submitted {
        line: usize,
        key: String,
        request_id: String,
        at: DateTime<Utc>,
    },
    /// The request ended; `result` is its results line.
    Finished {
        line: usize,
        key: String,
        request_id: String,
        status: String,
        result: Value,
        at: DateTime<Utc>,
    },
}

/// What the journal says about one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    pub request_id: Option<String>,
    pub finished: Option<Value>,
}

/// Everything the journal knows, by idempotency key; and how many lines it skipped.
pub fn read_journal(text: &str) -> (Option<String>, HashMap<String, Known>, usize) {
    let mut identity = None;
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Event>(line) {
            Ok(Event::Batch { identity: i, .. }) => identity = Some(i),
            Ok(Event::Submitted {
                key, request_id, ..
            }) => known.entry(key).or_default().request_id = Some(request_id),
            Ok(Event::Finished {
                key,
                request_id,
                result,
                ..
            }) => {
                let k = known.entry(key).or_default();
                k.request_id = Some(request_id);
                k.finished = Some(result);
            }
            // A line torn by a kill mid-write, or edited by hand.
            Err(_) => skipped += 1,
        }
    }
    (identity, known, skipped)
}

/// The journal file, appended to one whole, synced line at a time.
pub(super) struct Journal {
    file: std::sync::Mutex<std::fs::File>,
    path: PathBuf,
}

impl Journal {
    pub(super) fn append(&self, event: &Event) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(event)?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| anyhow::anyhow!("writing the journal {}: {e}", self.path.display()))
    }
}

/// Reads what earlier runs wrote in the journal at `path`, then opens it for appending and
/// locks it for this run alone; a new journal starts with the batch's identity. `None` when
/// another run holds the lock.
pub(super) fn open(
    path: &Path,
    identity: &str,
) -> anyhow::Result<Option<(Journal, HashMap<String, Known>)>> {
    let earlier = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("reading the journal {}: {e}", path.display()),
    };
    let (journal_identity, known, torn) = read_journal(&earlier);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("opening the journal {}: {e}", path.display()))?;
    if let Err(e) = file.try_lock() {
        eprintln!(
            "error: the journal {} is in use by another fave batch ({e})",
            path.display()
        );
        return Ok(None);
    }
    let err = Palette::stderr();
    if torn > 0 {
        eprintln!(
            "{}: skipped {torn} unreadable line(s) of the journal {} (a run killed mid-write)",
            err.paint(Paint::Yellow, "warning"),
            path.display()
        );
    }
    if journal_identity.as_ref().is_some_and(|j| j != identity) {
        eprintln!(
            "{}: the journal {} was written for {}; this batch is {identity}, so its entries \
             do not apply",
            err.paint(Paint::Yellow, "warning"),
            path.display(),
            journal_identity.as_deref().unwrap_or("?")
        );
    }
    let journal = Journal {
        file: std::sync::Mutex::new(file),
        path: path.to_path_buf(),
    };
    if journal_identity.is_none() {
        journal.append(&Event::Batch {
            identity: identity.to_owned(),
            at: Utc::now(),
        })?;
    }
    Ok(Some((journal, known)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_journal_is_read_by_key_and_a_torn_line_is_skipped() {
        let at = Utc::now();
        let events = [
            Event::Batch {
                identity: "name:x".into(),
                at,
            },
            Event::Submitted {
                line: 1,
                key: "k1".into(),
                request_id: "r1".into(),
                at,
            },
            Event::Submitted {
                line: 2,
                key: "k2".into(),
                request_id: "r2".into(),
                at,
            },
            Event::Finished {
                line: 1,
                key: "k1".into(),
                request_id: "r1".into(),
                status: "COMPLETED".into(),
                result: json!({"line": 1, "status": "COMPLETED"}),
                at,
            },
        ];
        let mut text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        text.push_str("{\"event\":\"finished\",\"line\":2,\"ke");
        let (identity, known, torn) = read_journal(&text);
        assert_eq!(identity.as_deref(), Some("name:x"));
        assert_eq!(torn, 1);
        assert_eq!(
            known["k1"].finished.as_ref().unwrap()["status"],
            "COMPLETED"
        );
        assert_eq!(known["k2"].request_id.as_deref(), Some("r2"));
        assert!(known["k2"].finished.is_none());
    }
}
