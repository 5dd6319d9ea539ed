//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of every loaded queue
//! space's queues, the forwarders, and the daemon.
//!
//! Queue spaces that are not loaded (no session has used them since the daemon started,
//! or `ipcrm` unloaded them) are not reported: loading one only to measure it would hold
//! its memory and its file. Counters live in memory: they start at zero when a queue space
//! is loaded (or the daemon starts), which Prometheus' `rate()` takes as a reset.

use super::Shared;
use super::routes::{Answer, failure};
use crate::engine::stats::QueueStats;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use qm_common::Diagnostic;
use qm_common::protocol::ForwarderInfo;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Everything `/metrics` reports, gathered in one go.
struct Snapshot {
    queues: Vec<(String, Vec<QueueStats>)>,
    forwarders: Vec<ForwarderInfo>,
    sessions: usize,
    http_connections: usize,
    commits: u64,
    journal_syncs: crate::timings::Counted,
}

pub async fn answer(shared: &Arc<Shared>) -> Answer {
    let shared = shared.clone();
    let snapshot = tokio::task::spawn_blocking(move || snapshot(&shared)).await;
    match snapshot {
        Ok(s) => {
            let mut answer = Response::new(Full::new(Bytes::from(render(&s))));
            answer.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            answer
        }
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            Diagnostic::System.name(),
            format!("gathering the metrics failed: {e}"),
        ),
    }
}

fn snapshot(shared: &Shared) -> Snapshot {
    let daemon = &shared.daemon;
    // The store's lock only while the loaded engines are listed; each engine's own lock
    // only while its queues are read.
    let engines: Vec<_> = {
        let store = daemon.store();
        store.loaded.iter().map(|(name, s)| (name.clone(), s.engine.clone())).collect()
    };
    Snapshot {
        queues: engines.into_iter().map(|(name, e)| (name, e.queue_stats())).collect(),
        forwarders: daemon.forwarders.list(),
        sessions: daemon.sessions.count(),
        http_connections: shared.connections(),
        commits: crate::engine::writer::COMMITS.load(Ordering::Relaxed),
        journal_syncs: crate::timings::JOURNAL_SYNCS.read(),
    }
}

/// A label value with `\`, `"` and line breaks escaped, as the format wants.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family: its HELP and TYPE lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

type QueueValue = fn(&QueueStats) -> String;

/// The per-queue families: name, type, help, value.
const QUEUE_FAMILIES: &[(&str, &str, &str, QueueValue)] = &[
    (
        "qm_queue_depth",
        "gauge",
        "Messages on the queue: ready, waiting for their time, or held by a transaction.",
        |q| q.messages.to_string(),
    ),
    ("qm_queue_bytes", "gauge", "Bytes of the bodies of the messages on the queue.", |q| {
        q.bytes.to_string()
    }),
    (
        "qm_queue_oldest_message_age_seconds",
        "gauge",
        "Seconds since the oldest message on the queue was enqueued (0 when it is empty).",
        |q| format!("{:.3}", q.oldest_age_secs),
    ),
    (
        "qm_queue_enqueued_total",
        "counter",
        "Enqueues committed, in memory since the queue space was loaded in this qmd.",
        |q| q.counters.enqueued.to_string(),
    ),
    (
        "qm_queue_dequeued_total",
        "counter",
        "Dequeues committed, in memory since the queue space was loaded in this qmd.",
        |q| q.counters.dequeued.to_string(),
    ),
    (
        "qm_queue_retried_total",
        "counter",
        "Dequeues rolled back (one retry each), in memory since the queue space was loaded \
         in this qmd.",
        |q| q.counters.retried.to_string(),
    ),
    (
        "qm_queue_moved_to_error_queue_total",
        "counter",
        "Messages moved from this queue to the error queue, in memory since the queue space \
         was loaded in this qmd.",
        |q| q.counters.to_error.to_string(),
    ),
    (
        "qm_queue_expired_total",
        "counter",
        "Messages that expired on this queue, in memory since the queue space was loaded in \
         this qmd.",
        |q| q.counters.expired.to_string(),
    ),
    (
        "qm_queue_threshold_firings_total",
        "counter",
        "High limits reached (threshold firings, with or without a command), in memory since \
         the queue space was loaded in this qmd.",
        |q| q.counters.firings.to_string(),
    ),
    (
        "qm_queue_max_length",
        "gauge",
        "The queue's maximum length in messages (qcreate/qchange -L); +Inf when it has none.",
        |q| limit(q.attrs.max_messages),
    ),
    (
        "qm_queue_max_message_size_bytes",
        "gauge",
        "The queue's largest message body (qcreate/qchange -S); +Inf when it has none.",
        |q| limit(q.attrs.max_size),
    ),
    (
        "qm_queue_enqueue_enabled",
        "gauge",
        "1 when the queue takes enqueues, 0 when they are switched off (-E off).",
        |q| u8::from(q.attrs.enqueue_enabled).to_string(),
    ),
    (
        "qm_queue_dequeue_enabled",
        "gauge",
        "1 when the queue gives out messages, 0 when dequeues are switched off (-D off).",
        |q| u8::from(q.attrs.dequeue_enabled).to_string(),
    ),
    (
        "qm_queue_waiting_enqueues",
        "gauge",
        "Enqueues waiting for room on the queue (it is at its maximum length).",
        |q| q.waiting_enqueues.to_string(),
    ),
    (
        "qm_queue_last_activity_timestamp_seconds",
        "gauge",
        "When the last enqueue or dequeue on the queue was committed (its creation time \
         when none was), in seconds since the epoch.",
        |q| q.last_activity.to_string(),
    ),
];

fn limit(value: Option<u64>) -> String {
    value.map_or_else(|| "+Inf".to_string(), |v| v.to_string())
}

fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in QUEUE_FAMILIES {
        let samples: Vec<(String, String)> = s
            .queues
            .iter()
            .flat_map(|(qspace, queues)| {
                queues.iter().map(move |q| {
                    let labels =
                        format!("qspace=\"{}\",queue=\"{}\"", label(qspace), label(&q.queue));
                    (labels, value(q))
                })
            })
            .collect();
        family(&mut out, name, kind, help, &samples);
    }
    let modes: Vec<(String, String)> = s
        .queues
        .iter()
        .flat_map(|(qspace, queues)| {
            queues.iter().map(move |q| {
                let labels = format!(
                    "qspace=\"{}\",queue=\"{}\",mode=\"{}\"",
                    label(qspace),
                    label(&q.queue),
                    q.attrs.persistence
                );
                (labels, "1".to_string())
            })
        })
        .collect();
    family(
        &mut out,
        "qm_queue_persistence",
        "gauge",
        "The queue's persistence mode (conditional, persistent, volatile): 1 on the series of \
         its mode.",
        &modes,
    );
    let forwarders: Vec<(String, String)> = s
        .forwarders
        .iter()
        .flat_map(|f| {
            f.queues.iter().map(move |queue| {
                let labels = format!(
                    "qspace=\"{}\",queue=\"{}\",forwarder=\"{}\",state=\"{}\"",
                    label(&f.qspace),
                    label(queue),
                    f.id,
                    label(&f.state)
                );
                (labels, "1".to_string())
            })
        })
        .collect();
    family(
        &mut out,
        "qm_forwarder_state",
        "gauge",
        "The state of each forwarder on each queue it serves, as psr shows it (running, idle, \
         stopping, stopped, exited, failed, not booted): 1 on the series of its state.",
        &forwarders,
    );
    let daemon = [
        (
            "qm_sessions",
            "gauge",
            "Connections (sessions) open now, on every face: control socket, network, HTTP.",
            s.sessions.to_string(),
        ),
        (
            "qm_http_connections",
            "gauge",
            "HTTP connections open now (at most -w MAXCONN).",
            s.http_connections.to_string(),
        ),
        (
            "qm_commits_total",
            "counter",
            "Storage transactions committed (one fsync each, shared by the writes of a group \
             commit), in memory since the daemon started.",
            s.commits.to_string(),
        ),
    ];
    for (name, kind, help, value) in daemon {
        family(&mut out, name, kind, help, &[(String::new(), value)]);
    }
    journal_syncs(&mut out, &s.journal_syncs);
    out
}

/// The histogram of the journal's syncs (see [`crate::timings`]).
fn journal_syncs(out: &mut String, c: &crate::timings::Counted) {
    let name = "qm_journal_sync_seconds";
    let bounds = crate::timings::BOUNDS_US.iter().map(|b| format!("{}", *b as f64 / 1e6));
    let samples: Vec<(String, String)> = bounds
        .chain(std::iter::once("+Inf".to_string()))
        .zip(&c.cumulative)
        .map(|(le, n)| (format!("le=\"{le}\""), n.to_string()))
        .collect();
    let help = "Time to write and sync one journal record, one group commit, since the daemon \
                started: every request of the group waited for it; long ones mean a slow or \
                busy disk.";
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}_bucket{{{labels}}} {value}");
    }
    let _ = writeln!(out, "{name}_sum {}", c.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", c.count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::index::QueueCounters;

    #[test]
    fn exposition() {
        let q = QueueStats {
            queue: "Q\"1".into(),
            messages: 3,
            bytes: 30,
            oldest_age_secs: 1.5,
            counters: QueueCounters { enqueued: 4, dequeued: 1, ..Default::default() },
            attrs: qm_common::queue::QueueAttrs {
                max_messages: Some(10),
                enqueue_enabled: false,
                persistence: qm_common::queue::Persistence::Volatile,
                ..Default::default()
            },
            last_activity: 1_700_000_000,
            waiting_enqueues: 2,
        };
        let s = Snapshot {
            queues: vec![("QS".into(), vec![q])],
            forwarders: Vec::new(),
            sessions: 2,
            http_connections: 1,
            commits: 9,
            journal_syncs: crate::timings::Counted {
                cumulative: vec![1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4],
                sum_us: 12_000_700,
            },
        };
        let text = render(&s);
        assert!(text.contains("# TYPE qm_queue_depth gauge\n"), "{text}");
        for line in [
            "qm_queue_max_length{qspace=\"QS\",queue=\"Q\\\"1\"} 10\n",
            "qm_queue_max_message_size_bytes{qspace=\"QS\",queue=\"Q\\\"1\"} +Inf\n",
            "qm_queue_enqueue_enabled{qspace=\"QS\",queue=\"Q\\\"1\"} 0\n",
            "qm_queue_waiting_enqueues{qspace=\"QS\",queue=\"Q\\\"1\"} 2\n",
            "qm_queue_persistence{qspace=\"QS\",queue=\"Q\\\"1\",mode=\"volatile\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        assert!(text.contains("qm_queue_depth{qspace=\"QS\",queue=\"Q\\\"1\"} 3\n"), "{text}");
        assert!(text.contains(
            "qm_queue_oldest_message_age_seconds{qspace=\"QS\",queue=\"Q\\\"1\"} 1.500\n"
        ));
        assert!(text.contains("qm_queue_enqueued_total{qspace=\"QS\",queue=\"Q\\\"1\"} 4\n"));
        assert!(text.contains("qm_commits_total 9\n"));
        for line in [
            "# TYPE qm_journal_sync_seconds histogram\n",
            "qm_journal_sync_seconds_bucket{le=\"0.00025\"} 1\n",
            "qm_journal_sync_seconds_bucket{le=\"0.0005\"} 3\n",
            "qm_journal_sync_seconds_bucket{le=\"10\"} 3\n",
            "qm_journal_sync_seconds_bucket{le=\"+Inf\"} 4\n",
            "qm_journal_sync_seconds_sum 12.0007\n",
            "qm_journal_sync_seconds_count 4\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        assert!(text.contains("# HELP qm_sessions "));
    }
}
