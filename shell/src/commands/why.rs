//! `qwhy`: why a message of the open queue space is not moving, one sentence per reason.

use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::message::MsgId;
use qm_common::protocol::{MessageRequest, Reply, Request};
use qm_common::why::{Reason, Why};
use serde::Serialize;
use serde_json::{Map, Value, json};

const MSGID: &str = "Message id: ";

pub fn qwhy(sh: &mut Shell, args: Args) -> CmdResult {
    let mut given = args.positionals.clone();
    if let Some(m) = args.value('m') {
        if !given.is_empty() {
            return Err("qwhy: give the message id once, with -m or as the argument".into());
        }
        given.push(m.to_string());
    }
    let mut pos = Positionals::new(given);
    // A bad answer read from a script is reported by the call, before it reaches qmd.
    let msgid = sh
        .required(&mut pos, MSGID, |text| MsgId::parse(text).map(Some))?
        .unwrap_or(MsgId(Vec::new()));
    let request = MessageRequest::Why { msgid };
    if let Reply::Why(why) = sh.call(Request::Message(request))?.reply {
        if sh.wants_json(args.json) {
            sh.output(&render::json(&WhyJson::from(&*why)));
        } else {
            let lines: Vec<String> = why.reasons.iter().map(Reason::sentence).collect();
            sh.output(&lines.join("\n"));
        }
    }
    Ok(())
}

/// `qwhy --json`: the message, where it is, and its reasons, each a `kind`, the `sentence`
/// and the facts behind it (times in seconds since the epoch).
#[derive(Serialize)]
struct WhyJson {
    msgid: String,
    qspace: String,
    queue: String,
    reasons: Vec<ReasonJson>,
}

/// One reason: its kind and sentence first, then its facts.
#[derive(Serialize)]
struct ReasonJson {
    kind: &'static str,
    sentence: String,
    #[serde(flatten)]
    facts: Map<String, Value>,
}

impl From<&Why> for WhyJson {
    fn from(w: &Why) -> Self {
        WhyJson {
            msgid: w.msgid.to_string(),
            qspace: w.qspace.clone(),
            queue: w.queue.clone(),
            reasons: w.reasons.iter().map(reason_json).collect(),
        }
    }
}

fn reason_json(r: &Reason) -> ReasonJson {
    let facts = match r {
        Reason::Held(h) | Reason::Uncommitted(h) => {
            json!({ "transaction": h.txn, "pid": h.pid, "program": h.program })
        }
        Reason::Busy => json!({}),
        Reason::RetryDelay { until, retry, retries } => {
            json!({ "until": until, "retry": retry, "retries": retries })
        }
        Reason::NotAvailable { until } => json!({ "until": until }),
        Reason::Behind { queue, total, by } => {
            let by: Map<String, Value> =
                by.iter().map(|(why, n)| (why.name().to_string(), json!(n))).collect();
            json!({ "queue": queue, "ahead": total, "by": by })
        }
        Reason::NoForwarder { queue, configured } => {
            let configured: Vec<Value> =
                configured.iter().map(|f| json!({ "id": f.id, "state": f.state })).collect();
            json!({ "queue": queue, "configured": configured })
        }
        Reason::Expired { at } => json!({ "at": at }),
        Reason::ErrorQueue { error_queue, origin, retries } => {
            json!({ "error_queue": error_queue, "origin_queue": origin, "retries": retries })
        }
        Reason::NextInLine { queue } => json!({ "queue": queue }),
    };
    let facts = match facts {
        Value::Object(facts) => facts,
        _ => Map::new(),
    };
    ReasonJson { kind: r.kind(), sentence: r.sentence(), facts }
}
