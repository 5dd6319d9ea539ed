//! Rendering replies: tables for people (tabled), JSON for programs.

use qm_common::device::{DeviceListing, FREE_MAP_SLOTS, VtocEntry};
use qm_common::error::shown_lines;
use qm_common::message::{Criteria, MessageInfo, TransactionInfo, escape_bytes};
use qm_common::protocol::DaemonStatus;
use qm_common::qspace::{Attachment, QueueSpaceInfo, SizeEstimate};
use qm_common::queue::{QueueListing, QueueUsage};
use qm_common::time::format_local;
use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style;

/// A table with a header row, fitted to the terminal when standard output is one (see
/// [`crate::table`]). Control characters in cells (what a command printed, a name a client
/// gave) are shown as escapes; line breaks stay.
pub fn table<S: AsRef<str>>(header: &[S], rows: Vec<Vec<String>>) -> String {
    let header = header.iter().map(|h| h.as_ref().to_string()).collect();
    let rows = rows.into_iter().map(|r| r.iter().map(|c| shown_lines(c)).collect()).collect();
    crate::table::layout(header, rows, terminal_width())
}

/// The width of the terminal standard output is, when it is one.
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills the winsize given for a terminal; an all-zero one is valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// A two-column table of names and values, without a header; values as in [`table`].
pub fn key_values(rows: Vec<(&str, String)>) -> String {
    let mut b = Builder::default();
    for (k, v) in rows {
        b.push_record([k.to_string(), shown_lines(&v)]);
    }
    let mut t = b.build();
    t.with(Style::blank());
    crate::table::trim_lines(&t.to_string())
}

/// One JSON document on one line: several listings in a session make JSON Lines.
pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn device_listing(d: &DeviceListing, verbose: bool) -> String {
    let rows = d
        .entries
        .iter()
        .map(|e| {
            let free: u64 = e.free.iter().map(|r| r.size).sum();
            vec![
                e.entry.index.to_string(),
                e.entry.name.clone(),
                e.entry.start.to_string(),
                e.entry.size.to_string(),
                free.to_string(),
            ]
        })
        .collect();
    let mut out = format!("Device list on {} (page size {} bytes)\n", d.device, d.page_size);
    out += &table(&["index", "name", "start", "size", "free"], rows);
    out.push('\n');
    if verbose {
        for e in &d.entries {
            let used = e.free.len();
            out += &format!(
                "\nuniversal device index {}: free space map ({used} {} used, {} available)\n",
                e.entry.index,
                if used == 1 { "entry" } else { "entries" },
                FREE_MAP_SLOTS.saturating_sub(used)
            );
            let rows =
                e.free.iter().map(|r| vec![r.size.to_string(), r.addr.to_string()]).collect();
            out += &table(&["size", "addr"], rows);
            out.push('\n');
        }
    }
    out
}

pub fn vtoc(device: &str, entries: &[VtocEntry]) -> String {
    let rows = entries
        .iter()
        .map(|t| {
            vec![
                t.index.to_string(),
                t.name.clone(),
                t.extent.map_or("-".into(), |e| e.to_string()),
                t.device.to_string(),
                t.offset.to_string(),
                t.pages.to_string(),
            ]
        })
        .collect();
    format!(
        "Volume Table of Contents on {device}:\n{}\n",
        table(&["index", "table", "extent", "device", "offset", "pages"], rows)
    )
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{n} ({:.1} GiB)", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{n} ({:.1} MiB)", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{n} ({:.1} KiB)", n as f64 / 1024.0),
        n => n.to_string(),
    }
}

pub fn qspace(info: &QueueSpaceInfo) -> String {
    let p = &info.params;
    let errq = if p.error_queue.is_empty() { "(none)".to_string() } else { p.error_queue.clone() };
    let mut out = format!("Queue space {}\n", p.name);
    out += &key_values(vec![
        ("state", info.state.to_string()),
        ("IPC key", p.ipc_key.to_string()),
        (
            "pages",
            format!(
                "{} in {} extent(s), {} bytes each",
                info.total_pages,
                info.extents.len(),
                info.page_size
            ),
        ),
        ("overhead pages", info.overhead_pages.to_string()),
        (
            "blocks used",
            info.blocks_used.map_or_else(
                || "- (counted when the queue space is opened)".into(),
                |b| b.to_string(),
            ),
        ),
        ("queues", format!("{} of {}", info.queues_defined, p.queues)),
        ("transactions", p.transactions.to_string()),
        ("processes", p.processes.to_string()),
        ("messages", format!("{} of {}", info.messages, p.messages)),
        ("error queue", errq),
        ("initialized", if p.initialize { "yes" } else { "no" }.into()),
        ("blocking factor", p.blocking.to_string()),
        ("actions (-A)", p.actions.to_string()),
        ("overflow memory (-o)", p.overflow.to_string()),
        (
            "non-persistent memory (-n)",
            format!("{} = {} bytes", p.nonpersistent, info.nonpersistent_bytes),
        ),
        ("memory estimate", bytes(info.memory_estimate)),
        ("file", info.file.clone()),
    ]);
    out.push_str("\n\n");
    let rows = info
        .extents
        .iter()
        .map(|t| {
            vec![
                t.extent.map_or("-".into(), |e| e.to_string()),
                t.index.to_string(),
                t.device.to_string(),
                t.offset.to_string(),
                t.pages.to_string(),
            ]
        })
        .collect();
    out += &table(&["extent", "vtoc", "device", "offset", "pages"], rows);
    out.push('\n');
    out
}

pub fn size(s: &SizeEstimate) -> String {
    key_values(vec![
        ("pages", s.pages.to_string()),
        ("queues", s.queues.to_string()),
        ("transactions", s.transactions.to_string()),
        ("processes", s.processes.to_string()),
        ("messages", s.messages.to_string()),
        ("non-persistent memory", bytes(s.nonpersistent_bytes)),
        ("system memory", bytes(s.system_bytes)),
        ("total memory", bytes(s.total_bytes)),
        ("semaphores", s.semaphores.to_string()),
    ]) + "\n"
}

pub fn attachments(list: &[Attachment]) -> String {
    let rows = list
        .iter()
        .map(|a| {
            vec![
                a.qspace.clone(),
                a.ipc_key.to_string(),
                a.state.to_string(),
                if a.session == 0 { "-".into() } else { a.session.to_string() },
                a.pid.map_or("-".into(), |p| p.to_string()),
                a.program.clone(),
                a.kind.clone(),
                format_local(a.since),
            ]
        })
        .collect();
    table(&["qspace", "ipckey", "state", "session", "pid", "program", "kind", "since"], rows) + "\n"
}

fn usage_row(name: &str, u: &QueueUsage) -> Vec<String> {
    vec![
        name.to_string(),
        u.messages().to_string(),
        u.persistent_messages.to_string(),
        u.nonpersistent_messages.to_string(),
        u.persistent_bytes.to_string(),
        u.blocks.to_string(),
        u.nonpersistent_bytes.to_string(),
    ]
}

pub fn queues(listing: &QueueListing, verbose: bool) -> String {
    let mut rows: Vec<Vec<String>> =
        listing.queues.iter().map(|q| usage_row(&q.def.name, &q.usage)).collect();
    // One queue (`qinfo QUEUE`) has no total of its own: the space's total would mislead.
    if listing.queues.len() > 1 {
        rows.push(usage_row("(total)", &listing.total));
    }
    let mut out = table(
        &["queue", "messages", "persistent", "nonpersistent", "bytes", "blocks", "np bytes"],
        rows,
    );
    out.push('\n');
    if verbose && !listing.queues.is_empty() {
        out.push('\n');
        let rows = listing
            .queues
            .iter()
            .map(|q| {
                let d = &q.def;
                let t = &d.threshold;
                let n = &d.nonpersistent_threshold;
                vec![
                    d.name.clone(),
                    d.order.to_string(),
                    d.out_of_order.to_string(),
                    d.retries.to_string(),
                    d.retry_delay.to_string(),
                    format!("{}/{}", t.high, t.low),
                    t.command.clone(),
                    format!("{}/{}", n.high, n.low),
                    n.command.clone(),
                    d.delivery.to_string(),
                    d.expiration.to_string(),
                ]
            })
            .collect();
        out += &table(
            &[
                "queue",
                "order",
                "out-of-order",
                "retries",
                "delay",
                "high/low",
                "command",
                "np high/low",
                "np command",
                "delivery",
                "expiration",
            ],
            rows,
        );
        out.push('\n');
        out.push('\n');
        out += &attributes(listing);
        out.push('\n');
    }
    out
}

/// Verbose `qinfo`'s table of queue attributes (seed 004).
fn attributes(listing: &QueueListing) -> String {
    let limit = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |n| n.to_string());
    let switch = |on: bool| if on { "on" } else { "off" }.to_string();
    let time = |secs: u64| if secs == 0 { "-".to_string() } else { format_local(secs) };
    let rows = listing
        .queues
        .iter()
        .map(|q| {
            let a = &q.def.attrs;
            vec![
                q.def.name.clone(),
                limit(a.max_messages),
                limit(a.max_size),
                switch(a.enqueue_enabled),
                switch(a.dequeue_enabled),
                a.persistence.to_string(),
                limit(a.idle_expiry),
                time(a.created),
                time(q.last_activity),
                q.waiting_enqueues.to_string(),
                if a.aliases.is_empty() { "-".to_string() } else { a.aliases.join(" ") },
                if a.annotation.is_empty() { "-".to_string() } else { a.annotation.clone() },
            ]
        })
        .collect();
    table(
        &[
            "queue",
            "max length",
            "max size",
            "enqueue",
            "dequeue",
            "persistence",
            "idle expiry",
            "created",
            "last activity",
            "waiting enqueues",
            "aliases",
            "annotation",
        ],
        rows,
    )
}

pub fn status(s: &DaemonStatus) -> String {
    key_values(vec![
        ("pid", s.pid.to_string()),
        ("version", s.version.clone()),
        (
            "device",
            format!("{}{}", s.device, if s.device_exists { "" } else { " (not created yet)" }),
        ),
        ("socket", s.socket.clone()),
        ("started", format_local(s.started)),
        ("sessions", s.sessions.to_string()),
        (
            "loaded queue spaces",
            if s.loaded_qspaces.is_empty() { "(none)".into() } else { s.loaded_qspaces.join(", ") },
        ),
        ("configuration", s.config.clone()),
        ("network", s.network.clone().unwrap_or_else(|| "(off: control socket only)".into())),
    ]) + "\n"
}

/// A message for JSON output: ids as escaped text, the body as UTF-8 text when it is, else
/// in base64 (`body_encoding` says which).
#[derive(Serialize)]
pub struct MessageJson {
    pub msgid: String,
    pub corrid: String,
    pub priority: u8,
    pub enqueued: u64,
    pub expiration: Option<u64>,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub delivery: String,
    pub reply_qos: Option<String>,
    pub urcode: i64,
    pub retries: u32,
    pub origin_queue: Option<String>,
    pub body: String,
    /// `utf-8` or `base64`.
    pub body_encoding: &'static str,
}

impl From<&qm_common::message::Message> for MessageJson {
    fn from(m: &qm_common::message::Message) -> Self {
        MessageJson {
            msgid: m.msgid.to_string(),
            corrid: escape_bytes(&m.corrid),
            priority: m.priority,
            enqueued: m.enqueued,
            expiration: m.expiration,
            reply_queue: m.reply_queue.clone(),
            failure_queue: m.failure_queue.clone(),
            delivery: m.delivery.to_string(),
            reply_qos: m.reply_qos.map(|q| q.to_string()),
            urcode: m.urcode,
            retries: m.retries,
            origin_queue: m.origin_queue.clone(),
            body: body_text(&m.body),
            body_encoding: if std::str::from_utf8(&m.body).is_ok() { "utf-8" } else { "base64" },
        }
    }
}

/// A body for JSON: the text itself when it is UTF-8, else its base64.
fn body_text(body: &[u8]) -> String {
    use base64::Engine;
    match std::str::from_utf8(body) {
        Ok(text) => text.to_string(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(body),
    }
}

/// A `qlist` entry for JSON output.
#[derive(Serialize)]
pub struct MessageInfoJson {
    pub msgid: String,
    pub corrid: String,
    pub priority: u8,
    pub retries: u32,
    pub length: u64,
    pub delivery: String,
    pub reply_qos: Option<String>,
    pub enqueued: u64,
    pub available: Option<u64>,
    pub expiration: Option<u64>,
    pub state: String,
    pub origin_queue: Option<String>,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub urcode: i64,
}

impl From<&MessageInfo> for MessageInfoJson {
    fn from(m: &MessageInfo) -> Self {
        MessageInfoJson {
            msgid: m.msgid.to_string(),
            corrid: escape_bytes(&m.corrid),
            priority: m.priority,
            retries: m.retries,
            length: m.length,
            delivery: m.delivery.to_string(),
            reply_qos: m.reply_qos.map(|q| q.to_string()),
            enqueued: m.enqueued,
            available: m.available,
            expiration: m.expiration,
            state: m.state.to_string(),
            origin_queue: m.origin_queue.clone(),
            reply_queue: m.reply_queue.clone(),
            failure_queue: m.failure_queue.clone(),
            urcode: m.urcode,
        }
    }
}

fn opt_time(t: Option<u64>) -> String {
    t.map_or("-".into(), format_local)
}

pub fn messages(list: &[MessageInfo], verbose: bool) -> String {
    let mut header = vec![
        "msgid",
        "prio",
        "retries",
        "length",
        "delivery",
        "reply qos",
        "state",
        "available",
        "expiration",
    ];
    if verbose {
        header.extend([
            "corrid",
            "enqueued",
            "origin queue",
            "reply queue",
            "failure queue",
            "urcode",
        ]);
    }
    let rows = list
        .iter()
        .map(|m| {
            let mut row = vec![
                m.msgid.to_string(),
                m.priority.to_string(),
                m.retries.to_string(),
                m.length.to_string(),
                m.delivery.to_string(),
                m.reply_qos.map_or("-".into(), |q| q.to_string()),
                m.state.to_string(),
                opt_time(m.available),
                opt_time(m.expiration),
            ];
            if verbose {
                row.extend([
                    escape_bytes(&m.corrid),
                    format_local(m.enqueued),
                    m.origin_queue.clone().unwrap_or_else(|| "-".into()),
                    m.reply_queue.clone().unwrap_or_else(|| "-".into()),
                    m.failure_queue.clone().unwrap_or_else(|| "-".into()),
                    m.urcode.to_string(),
                ]);
            }
            row
        })
        .collect();
    table(&header, rows) + "\n"
}

pub fn transactions(list: &[TransactionInfo]) -> String {
    let rows = list
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.qspace.clone(),
                t.session.to_string(),
                t.pid.map_or("-".into(), |p| p.to_string()),
                t.program.clone(),
                format_local(t.started),
                t.timeout_in.to_string(),
                t.enqueued.to_string(),
                t.dequeued.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "index",
            "qspace",
            "session",
            "pid",
            "program",
            "started",
            "timeout in (s)",
            "enqueued",
            "dequeued",
        ],
        rows,
    ) + "\n"
}

pub fn criteria(c: &Criteria) -> String {
    if c.is_empty() {
        return "No scan criteria are set (every message is selected)".into();
    }
    let range = |(a, b): (u64, u64)| {
        if a == b { format_local(a) } else { format!("{} - {}", format_local(a), format_local(b)) }
    };
    let mut rows = Vec::new();
    if let Some(t) = c.time {
        rows.push(("time", range(t)));
    }
    if let Some((a, b)) = c.priority {
        rows.push(("priority", if a == b { a.to_string() } else { format!("{a}-{b}") }));
    }
    if let Some(m) = &c.msgid {
        rows.push(("msgid", m.to_string()));
    }
    if let Some(i) = &c.corrid {
        rows.push(("corrid", escape_bytes(i)));
    }
    if let Some(d) = c.delivery {
        rows.push(("delivery", d.to_string()));
    }
    if let Some(e) = c.expiration {
        rows.push(("expiration", range(e)));
    }
    key_values(rows)
}

pub fn servers(list: &[qm_common::protocol::ForwarderInfo]) -> String {
    let rows = list
        .iter()
        .map(|f| {
            vec![
                f.id.to_string(),
                f.qspace.clone(),
                f.options.clone(),
                f.state.clone(),
                opt_time(f.booted),
                f.forwarded.to_string(),
                f.failures.to_string(),
                f.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["id", "qspace", "options", "state", "booted", "forwarded", "failures", "last error"],
        rows,
    ) + "\n"
}

pub fn firings(list: &[qm_common::protocol::FiringRecord], verbose: bool) -> String {
    let mut header =
        vec!["started", "queue", "limits", "limit", "usage", "command", "outcome", "ms"];
    if verbose {
        header.push("output");
    }
    let rows = list
        .iter()
        .map(|f| {
            let mut row = vec![
                format!("{}{}", format_local(f.started), if f.test { " (test)" } else { "" }),
                f.queue.clone(),
                f.limits.clone(),
                f.limit.clone(),
                f.usage.clone(),
                f.command.clone(),
                f.outcome.clone(),
                // Unknown while it runs, and when nobody saw it end.
                if f.duration_known() { f.duration_ms.to_string() } else { "-".to_string() },
            ];
            if verbose {
                row.push(f.output.clone());
            }
            row
        })
        .collect();
    table(&header, rows) + "\n"
}

/// `qauth`: who holds `admin` everywhere whatever is granted, then every grant (or those
/// that apply to `principal`).
pub fn grants(
    listing: &qm_common::rights::GrantListing,
    principal: Option<&qm_common::principal::Principal>,
) -> String {
    use qm_common::rights::rights_text;
    let always =
        listing.always_admin.iter().enumerate().filter(|(_, p)| principal.is_none_or(|q| q == *p));
    let mut rows: Vec<Vec<String>> = always
        .map(|(i, p)| {
            let who = if i == 0 { "always: the daemon's owner" } else { "always: root" };
            vec![p.to_string(), "admin".into(), format!("* ({who})")]
        })
        .collect();
    rows.extend(
        listing
            .grants
            .iter()
            .map(|g| vec![g.principal.to_string(), rights_text(&g.rights), g.scope.to_string()]),
    );
    if rows.is_empty() {
        return "No rights are granted to it".to_string();
    }
    table(&["Principal", "Rights", "Scope"], rows)
}

/// `managers`: one row per manager, in the order an application tries them.
pub fn managers(states: &[qm_common::managers::ManagerState]) -> String {
    let rows = states
        .iter()
        .map(|s| {
            let name = if s.chosen { format!("{} (QM_MANAGER)", s.name) } else { s.name.clone() };
            vec![
                name,
                s.priority.to_string(),
                s.source.to_string(),
                s.place.clone(),
                crate::commands::managers::state_text(s),
                s.qspaces.join(" "),
            ]
        })
        .collect();
    table(&["Manager", "Priority", "Profile", "Where", "State", "Queue spaces"], rows)
}

/// `whoami`.
pub fn identity(me: &qm_common::rights::Identity) -> String {
    let rights = if me.always_admin {
        "admin everywhere (the daemon's owner or root)".to_string()
    } else {
        format!("as granted (qauth {} shows them)", me.principal)
    };
    key_values(vec![
        ("Principal:", me.principal.to_string()),
        ("Face:", me.face.label().to_string()),
        ("Rights:", rights),
    ])
}

/// `qstat`'s table: one row per queue, with rates between `earlier` and `now`.
pub fn stat(
    now: &qm_common::stat::SpaceStat,
    earlier: &qm_common::stat::SpaceStat,
    hint: &str,
) -> String {
    let rows = now
        .queues
        .iter()
        .map(|q| {
            let rates = now.rates(earlier, q).unwrap_or_default();
            vec![
                q.queue.clone(),
                q.messages.to_string(),
                q.bytes.to_string(),
                format!("{:.1}", rates.enqueued_per_sec),
                format!("{:.1}", rates.dequeued_per_sec),
                age_text(q.oldest_age_ms),
                q.waiting.to_string(),
                q.retrying.to_string(),
                q.held.to_string(),
                q.threshold.clone(),
                if q.forwarders.is_empty() {
                    "-".into()
                } else {
                    q.forwarders.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                },
            ]
        })
        .collect();
    let taken = format_local(now.taken_us / 1_000_000);
    let sessions = qm_common::plural::count(now.sessions, "session", "sessions");
    let mut head = format!("{} at {taken}: {sessions} attached", now.qspace);
    if !hint.is_empty() {
        head.push_str(&format!(" ({hint})"));
    }
    let header = [
        "queue",
        "msgs",
        "bytes",
        "in/s",
        "out/s",
        "oldest",
        "waiting",
        "retry",
        "held",
        "threshold",
        "forwarders",
    ];
    format!("{head}\n{}\n", table(&header, rows))
}

/// An age as people read it: `0s`, `42s`, `3m12s`, `2h05m`, `3d04h`.
fn age_text(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `qstat --json`: the view, with each queue's rates.
pub fn stat_json(
    now: &qm_common::stat::SpaceStat,
    earlier: &qm_common::stat::SpaceStat,
) -> serde_json::Value {
    let mut value = serde_json::to_value(now).unwrap_or_default();
    if let Some(queues) = value.get_mut("queues").and_then(|q| q.as_array_mut()) {
        for (json, q) in queues.iter_mut().zip(&now.queues) {
            let rates = now.rates(earlier, q).unwrap_or_default();
            json["enqueued_per_sec"] = serde_json::json!(rates.enqueued_per_sec);
            json["dequeued_per_sec"] = serde_json::json!(rates.dequeued_per_sec);
        }
    }
    value
}

/// What `qverify` (and `qmd --verify`) checked, then each problem found.
pub fn verify(report: &qm_common::verify::VerifyReport) -> String {
    use qm_common::plural::count;
    let mut out = format!(
        "Device {}: {}, {}, {}\n",
        report.device,
        count(report.udl_entries, "device list entry", "device list entries"),
        count(report.vtoc_entries, "VTOC table", "VTOC tables"),
        count(report.files.len() as u64, "file", "files")
    );
    if !report.qspaces.is_empty() {
        let rows = report
            .qspaces
            .iter()
            .map(|q| vec![q.name.clone(), q.file.clone(), q.messages.to_string(), bytes(q.bytes)])
            .collect();
        out.push_str(&table(&["queue space", "file", "messages", "bytes"], rows));
        out.push('\n');
    }
    let problems = &report.problems;
    if problems.is_empty() {
        out.push_str("No problem found.\n");
        return out;
    }
    let rows = problems.listed.iter().map(|p| vec![p.place.clone(), p.what.clone()]).collect();
    out.push_str(&table(&["where", "problem"], rows));
    out.push('\n');
    if problems.more > 0 {
        let more = qm_common::plural::count(problems.more, "more problem", "more problems");
        out.push_str(&format!("... and {more}, not listed\n"));
    }
    out
}

/// What `qbackup` made.
pub fn backup(report: &qm_common::backup::BackupReport) -> String {
    let m = &report.manifest;
    let bytes_total: u64 = m.files.iter().map(|f| f.total_bytes()).sum();
    let messages: u64 = m.qspaces.iter().map(|q| q.messages).sum();
    let secs = report.millis as f64 / 1000.0;
    let rate = if secs > 0.0 { bytes_total as f64 / secs / 1e6 } else { 0.0 };
    let rows = m
        .files
        .iter()
        .flat_map(|f| {
            let file = vec![f.original.clone(), f.name.clone(), bytes(f.bytes), f.crc32.clone()];
            let segments = f.segments.iter().map(|s| {
                let original = format!("{}.bodies.{}", f.original, s.number);
                vec![original, s.name.clone(), bytes(s.bytes), s.crc32.clone()]
            });
            std::iter::once(file).chain(segments)
        })
        .collect();
    format!(
        "Backup of {} in {}: {}, {} in {}; checked.\nWriters were held {:.1} ms at most for the snapshot; the longest pause of a writer \
         during the backup was {:.1} ms; it took {secs:.1} s ({rate:.0} MB/s).\n{}\n",
        m.device,
        report.dir,
        qm_common::plural::count(m.files.len() as u64, "file", "files"),
        qm_common::plural::count(messages, "message", "messages"),
        qm_common::plural::count(m.qspaces.len() as u64, "queue space", "queue spaces"),
        m.longest_pause_us as f64 / 1000.0,
        m.longest_writer_pause_us as f64 / 1000.0,
        table(&["file", "copy", "bytes", "crc32"], rows)
    )
}

/// What `qrestore` made.
pub fn restore(report: &qm_common::backup::RestoreReport) -> String {
    let rows = report.files.iter().map(|(from, to)| vec![from.clone(), to.clone()]).collect();
    let messages: u64 = report.qspaces.iter().map(|q| q.messages).sum();
    format!(
        "Device {} restored and checked: {} in {}.\n{}\n",
        report.device,
        qm_common::plural::count(messages, "message", "messages"),
        qm_common::plural::count(report.qspaces.len() as u64, "queue space", "queue spaces"),
        table(&["backed up from", "restored to"], rows)
    )
}
