//! Message administration on the open queue space: qset, qscan, qlist, qdeletemsg,
//! qchangeprio, qchangequeue, qchangetime, qchangeexp, and the transaction commands
//! qprinttrans, qcommittrans, qaborttrans.

use super::message::parse_expiry;
use super::number;
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::message::{Criteria, MsgId, Qos, parse_corrid};
use qm_common::names::check_queue_name;
use qm_common::protocol::{MessageRequest, QueueRequest, Reply, Request};
use qm_common::time::{parse_time_spec, parse_tuxedo_time};
use qm_common::{QmError, QmResult};

fn msg<T>(r: QmResult<T>) -> Result<T, String> {
    r.map_err(|e| e.message)
}

pub fn qset(sh: &mut Shell, args: Args) -> CmdResult {
    match args.positionals.first() {
        None => match &sh.target_queue {
            Some(q) => sh.info(&format!("Queue name is {q}")),
            None => sh.info("No queue name is set"),
        },
        Some(q) => {
            msg(check_queue_name(q))?;
            // The queue must exist in the open queue space; the daemon's error names it.
            sh.call(Request::Queue(QueueRequest::Get { name: q.clone() }))?;
            sh.target_queue = Some(q.clone());
        }
    }
    Ok(())
}

/// The queue `qset` chose; without one, says first that no queue space is open, if so.
fn target(sh: &mut Shell) -> Result<String, String> {
    match sh.target_queue.clone() {
        Some(q) => Ok(q),
        None => {
            sh.require_open()?;
            Err("Queue name must be set with qset".into())
        }
    }
}

/// `a[-b]` with both ends parsed by `one`.
pub(crate) fn range<T: Copy + PartialOrd + std::fmt::Display>(
    field: &str,
    text: &str,
    one: impl Fn(&str) -> QmResult<(T, T)>,
) -> QmResult<(T, T)> {
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (one(a)?.0, one(b)?.1),
        None => one(text)?,
    };
    if lo > hi {
        return Err(QmError::invalid(
            field,
            text,
            "the range is empty: the first value is after the second",
        ));
    }
    Ok((lo, hi))
}

/// The selection options of `qscan`.
pub fn parse_criteria(args: &Args) -> Result<Criteria, String> {
    let mut c = Criteria::default();
    if let Some(t) = args.value('t') {
        c.time = Some(msg(range("Time", t, |s| parse_tuxedo_time("Time", s)))?);
    }
    if let Some(p) = args.value('p') {
        c.priority =
            Some(msg(range("Priority", p, |s| number("Priority", s, 1..=100u8).map(|v| (v, v))))?);
    }
    if let Some(m) = args.value('m') {
        c.msgid = Some(msg(MsgId::parse(m))?);
    }
    if let Some(i) = args.value('i') {
        c.corrid = Some(msg(parse_corrid(i))?);
    }
    if let Some(d) = args.value('d') {
        c.delivery = Some(msg(d.parse::<Qos>())?);
    }
    if let Some(e) = args.value('e') {
        c.expiration =
            Some(msg(range("Expiration time", e, |s| parse_tuxedo_time("Expiration time", s)))?);
    }
    Ok(c)
}

pub fn qscan(sh: &mut Shell, args: Args) -> CmdResult {
    match args.positionals.first().map(String::as_str) {
        Some("none") => {
            sh.criteria = Criteria::default();
            return Ok(());
        }
        Some(other) => return Err(format!("qscan: '{other}' is invalid; give options or none")),
        None => {}
    }
    let c = parse_criteria(&args)?;
    if c.is_empty() {
        let text = render::criteria(&sh.criteria);
        sh.info(&text);
    } else {
        sh.criteria = c;
    }
    Ok(())
}

pub fn qlist(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = target(sh)?;
    let request = MessageRequest::List { queue: queue.clone(), criteria: sh.criteria.clone() };
    if let Reply::Messages(list) = sh.call(Request::Message(request))?.reply {
        if sh.wants_json(args.json) {
            let list: Vec<render::MessageInfoJson> = list.iter().map(Into::into).collect();
            sh.output(&render::json(&list));
        } else if list.is_empty() && sh.criteria.is_empty() {
            sh.info(&format!("INFO: Queue list - no messages {queue}"));
        } else if list.is_empty() {
            sh.info(&format!("INFO: Queue list - no messages matched on {queue}"));
        } else {
            let text = render::messages(&list, sh.verbose);
            sh.output(&text);
        }
    }
    Ok(())
}

/// `1 message`, `2 messages`.
fn messages(n: u64) -> String {
    qm_common::plural::count(n, "message", "messages")
}

/// Whether the queues a change works on exist, checked before asking for confirmation.
fn queues_exist(sh: &mut Shell, request: &MessageRequest) -> CmdResult {
    let (queue, new_queue) = match request {
        MessageRequest::ChangeQueue { queue, new_queue, .. } => (queue, Some(new_queue)),
        MessageRequest::List { queue, .. }
        | MessageRequest::Delete { queue, .. }
        | MessageRequest::ChangePriority { queue, .. }
        | MessageRequest::ChangeTime { queue, .. }
        | MessageRequest::ChangeExpiration { queue, .. } => (queue, None),
        MessageRequest::Transactions
        | MessageRequest::Complete { .. }
        | MessageRequest::Export { .. }
        | MessageRequest::EndExport { .. }
        | MessageRequest::Import { .. }
        | MessageRequest::Why { .. } => return Ok(()),
    };
    for name in std::iter::once(queue).chain(new_queue) {
        sh.call(Request::Queue(QueueRequest::Get { name: name.clone() }))?;
    }
    Ok(())
}

/// Runs a change on the selected messages, asking first when `ask` says so; prints how
/// many were `done` (e.g. "deleted") and how many were left alone because a transaction
/// holds them.
fn change(
    sh: &mut Shell,
    request: MessageRequest,
    ask: bool,
    declined: &str,
    done: &str,
) -> CmdResult {
    if ask {
        let check = queues_exist(sh, &request);
        if !sh.confirm_checked(check)? {
            sh.warn(declined);
            return Ok(());
        }
    }
    match sh.call_long(Request::Message(request))?.reply {
        Reply::Changed { changed, held: 0 } | Reply::Count(changed) => {
            sh.info(&format!("{} {done}", messages(changed)));
        }
        Reply::Changed { changed, held } => sh.info(&format!(
            "{} {done}; {} left alone: held by a transaction",
            messages(changed),
            messages(held)
        )),
        _ => {}
    }
    Ok(())
}

pub fn qdeletemsg(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = target(sh)?;
    let request = MessageRequest::Delete { queue, criteria: sh.criteria.clone() };
    change(sh, request, !args.flag('y'), "Messages not deleted", "deleted")
}

pub fn qchangeprio(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = target(sh)?;
    let mut pos = Positionals::new(args.positionals.clone());
    let priority = sh.required(&mut pos, "New priority: ", |s| number("Priority", s, 1..=100u8))?;
    let ask = !args.flag('y') && sh.criteria.is_empty();
    let request = MessageRequest::ChangePriority { queue, criteria: sh.criteria.clone(), priority };
    change(sh, request, ask, "Priority not changed", "changed")
}

pub fn qchangequeue(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = target(sh)?;
    let mut pos = Positionals::new(args.positionals.clone());
    let new_queue = sh.required(&mut pos, "New queue name: ", |s| {
        check_queue_name(s)?;
        Ok(s.to_string())
    })?;
    let ask = !args.flag('y') && sh.criteria.is_empty();
    if new_queue == queue {
        // Tuxedo's 1409 is a warning: nothing to do. A script's answer to the confirmation
        // this would have asked for is read, not run as a command.
        if ask {
            sh.skip_confirmation();
        }
        sh.warn(&format!("Queue change - new queue name {new_queue} matches old queue name"));
        return Ok(());
    }
    let request = MessageRequest::ChangeQueue { queue, criteria: sh.criteria.clone(), new_queue };
    change(sh, request, ask, "Queue not changed", "moved")
}

pub fn qchangetime(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = target(sh)?;
    let mut pos = Positionals::new(args.positionals.clone());
    let time = sh.required(&mut pos, "New time: ", |s| parse_time_spec("Time", s))?;
    let ask = !args.flag('y') && sh.criteria.is_empty();
    let request = MessageRequest::ChangeTime { queue, criteria: sh.criteria.clone(), time };
    change(sh, request, ask, "Time not changed", "changed")
}

pub fn qchangeexp(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = target(sh)?;
    let mut pos = Positionals::new(args.positionals.clone());
    let expiry = sh.required(&mut pos, "New expiration time: ", parse_expiry)?;
    let request = MessageRequest::ChangeExpiration { queue, criteria: sh.criteria.clone(), expiry };
    change(sh, request, !args.flag('y'), "Expiration time not changed", "changed")
}

pub fn qprinttrans(sh: &mut Shell, args: Args) -> CmdResult {
    if let Reply::Transactions(list) =
        sh.call(Request::Message(MessageRequest::Transactions))?.reply
    {
        if sh.wants_json(args.json) {
            sh.output(&render::json(&list));
        } else if list.is_empty() {
            sh.info("No transactions are open");
        } else {
            let text = render::transactions(&list);
            sh.output(&text);
        }
    }
    Ok(())
}

fn complete(sh: &mut Shell, args: Args, commit: bool) -> CmdResult {
    let mut pos = Positionals::new(args.positionals.clone());
    let id = sh.required(&mut pos, "Transaction index: ", |s| {
        number("Transaction index", s, 1..=u64::MAX)
    })?;
    // Before asking: in a script the confirmation would take the next line for nothing.
    if let Reply::Transactions(list) =
        sh.call(Request::Message(MessageRequest::Transactions))?.reply
        && !list.iter().any(|t| t.id == id)
    {
        let qspace = match sh.call(Request::Queue(QueueRequest::Info { name: None }))?.reply {
            Reply::Queues(l) => l.qspace,
            _ => "the open queue space".into(),
        };
        return Err(format!(
            "Transaction {id} is not open in queue space {qspace} (qprinttrans lists the open ones)"
        ));
    }
    if !args.flag('y') && !sh.confirm()? {
        sh.warn(if commit { "Transaction not committed" } else { "Transaction not aborted" });
        return Ok(());
    }
    sh.call(Request::Message(MessageRequest::Complete { id, commit }))?;
    sh.info(&format!("Transaction {id} {}", if commit { "committed" } else { "rolled back" }));
    Ok(())
}

pub fn qcommittrans(sh: &mut Shell, args: Args) -> CmdResult {
    complete(sh, args, true)
}

pub fn qaborttrans(sh: &mut Shell, args: Args) -> CmdResult {
    complete(sh, args, false)
}
