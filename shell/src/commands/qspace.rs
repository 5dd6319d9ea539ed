//! Queue space commands: qspacecreate, qspacelist, qspacechange, qspacedestroy, qopen,
//! qclose, qaddext, qsize, ipcs, ipcrm.

use super::{number, yes_no};
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::QmResult;
use qm_common::names::{check_error_queue_name, check_qspace_name};
use qm_common::protocol::{QueueSpaceRequest, Reply, Request};
use qm_common::qspace::{
    BLOCKING_DEFAULT, BLOCKING_MAX, COUNT_MAX, IPC_KEY_MAX, IPC_KEY_MIN, MESSAGES_MAX, MemorySize,
    QueueSpaceChange, QueueSpaceInfo, QueueSpaceParams, check_ipc_key,
};

const NAME: &str = "Queue space name: ";
const IPC_KEY: &str = "IPC Key for queue space";
const PAGES: &str = "Size of queue space in disk pages";
const QUEUES: &str = "Number of queues in queue space";
const TRANS: &str = "Number of concurrent transactions in queue space";
const PROCS: &str = "Number of concurrent processes in queue space";
const MSGS: &str = "Number of messages in queue space";
const ERRQ: &str = "Error queue name";
const INIT: &str = "Initialize extents";
const BLOCKING: &str = "Blocking factor";

/// A queue space name as typed.
pub fn qspace_name(text: &str) -> QmResult<String> {
    check_qspace_name(text)?;
    Ok(text.to_string())
}

/// An IPC key as typed.
pub fn ipc_key(text: &str) -> QmResult<u32> {
    let key = number(IPC_KEY, text, IPC_KEY_MIN..=IPC_KEY_MAX)?;
    check_ipc_key(key)?;
    Ok(key)
}

/// A count for `field`, 1 to `max`, as typed.
pub fn count(field: &'static str, max: u32) -> impl Fn(&str) -> QmResult<u32> {
    move |text| number(field, text, 1..=max)
}

/// An error queue name as typed (empty: none).
pub fn error_queue(text: &str) -> QmResult<String> {
    check_error_queue_name(text)?;
    Ok(text.to_string())
}

/// The `-n` option: memory for non-persistent messages.
pub fn memory_option(args: &Args) -> Result<Option<MemorySize>, String> {
    args.value('n').map(|v| v.parse::<MemorySize>().map_err(|e| e.message)).transpose()
}

/// A numeric dash option for `field`, within `range`.
pub fn option_number<T>(
    args: &Args,
    flag: char,
    field: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    args.value(flag).map(|v| number(field, v, range.clone()).map_err(|e| e.message)).transpose()
}

fn ask_initialize(sh: &mut Shell, pos: &mut Positionals) -> Result<bool, String> {
    sh.optional(pos, &format!("{INIT} (y, n [default=n]): "), false, None, |s| yes_no(INIT, s))
}

pub fn qspacecreate(sh: &mut Shell, args: Args) -> CmdResult {
    let nonpersistent = memory_option(&args)?.unwrap_or(MemorySize::ZERO);
    let actions = option_number(&args, 'A', "-A actions", 0..=COUNT_MAX)?.unwrap_or(0);
    let overflow = option_number(&args, 'o', "-o overflow memory", 0..=u64::MAX)?.unwrap_or(0);
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    let ipc_key = sh.required(&mut pos, &format!("{IPC_KEY}: "), ipc_key)?;
    let pages = sh
        .required(&mut pos, &format!("{PAGES}: "), |s| number(PAGES, s, 1..=u64::from(u32::MAX)))?;
    let queues = sh.required(&mut pos, &format!("{QUEUES}: "), count(QUEUES, COUNT_MAX))?;
    let transactions = sh.required(&mut pos, &format!("{TRANS}: "), count(TRANS, COUNT_MAX))?;
    let processes = sh.required(&mut pos, &format!("{PROCS}: "), count(PROCS, COUNT_MAX))?;
    let messages = sh.required(&mut pos, &format!("{MSGS}: "), count(MSGS, MESSAGES_MAX))?;
    let error_queue =
        sh.optional(&mut pos, &format!("{ERRQ}: "), String::new(), None, error_queue)?;
    let initialize = ask_initialize(sh, &mut pos)?;
    let blocking = sh.optional(
        &mut pos,
        &format!("{BLOCKING} [default={BLOCKING_DEFAULT}]: "),
        BLOCKING_DEFAULT,
        None,
        count(BLOCKING, BLOCKING_MAX),
    )?;
    let params = QueueSpaceParams {
        name,
        ipc_key,
        pages,
        queues,
        transactions,
        processes,
        messages,
        error_queue,
        initialize,
        blocking,
        nonpersistent,
        actions,
        overflow,
    };
    params.validate().map_err(|e| e.message)?;
    let show = initialize && sh.shows_progress();
    sh.call_with_progress(Request::QueueSpace(QueueSpaceRequest::Create(params)), show)?;
    Ok(())
}

fn fetch(sh: &mut Shell, name: Option<String>) -> Result<QueueSpaceInfo, String> {
    match sh.call(Request::QueueSpace(QueueSpaceRequest::List { name }))?.reply {
        Reply::QueueSpace(info) => Ok(*info),
        other => Err(format!("unexpected reply from qmd: {other:?}")),
    }
}

pub fn qspacelist(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let name = sh.text(&mut pos, NAME)?;
    let info = fetch(sh, Some(name).filter(|n| !n.is_empty()))?;
    let text = if sh.wants_json(args.json) { render::json(&info) } else { render::qspace(&info) };
    sh.output(&text);
    Ok(())
}

pub fn qspacechange(sh: &mut Shell, args: Args) -> CmdResult {
    let nonpersistent = memory_option(&args)?;
    let actions = option_number(&args, 'A', "-A actions", 0..=COUNT_MAX)?;
    let overflow = option_number(&args, 'o', "-o overflow memory", 0..=u64::MAX)?;
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    let cur = fetch(sh, Some(name.clone()))?.params;
    // An empty current value (no error queue) has nothing after `default=`: say so.
    let ask = |field: &str, current: &dyn std::fmt::Display| match current.to_string().as_str() {
        "" => format!("{field} [default=none]: "),
        c => format!("{field} [default={c}]: "),
    };
    let ipc_key = sh.optional(&mut pos, &ask(IPC_KEY, &cur.ipc_key), cur.ipc_key, None, ipc_key)?;
    let transactions = keep_count(sh, &mut pos, TRANS, cur.transactions, COUNT_MAX)?;
    let processes = keep_count(sh, &mut pos, PROCS, cur.processes, COUNT_MAX)?;
    let messages = keep_count(sh, &mut pos, MSGS, cur.messages, MESSAGES_MAX)?;
    let error_queue = if pos.peek().is_some() {
        // Given as an argument, "" clears the error queue rather than keeping it.
        sh.optional(&mut pos, "", String::new(), None, error_queue)?
    } else {
        sh.optional(
            &mut pos,
            &ask(ERRQ, &cur.error_queue),
            cur.error_queue.clone(),
            None,
            error_queue,
        )?
    };
    let initialize = ask_initialize(sh, &mut pos)?;
    let blocking = sh.optional(
        &mut pos,
        &ask(BLOCKING, &cur.blocking),
        cur.blocking,
        None,
        count(BLOCKING, BLOCKING_MAX),
    )?;
    let change = QueueSpaceChange {
        name,
        ipc_key,
        transactions,
        processes,
        messages,
        error_queue,
        initialize,
        blocking,
        nonpersistent,
        actions,
        overflow,
    };
    change.validate().map_err(|e| e.message)?;
    let show = initialize && sh.shows_progress();
    sh.call_with_progress(Request::QueueSpace(QueueSpaceRequest::Change(change)), show)?;
    Ok(())
}

/// A count offered with its current value as the default.
fn keep_count(
    sh: &mut Shell,
    pos: &mut Positionals,
    field: &'static str,
    current: u32,
    max: u32,
) -> Result<u32, String> {
    sh.optional(pos, &format!("{field} [default={current}]: "), current, None, count(field, max))
}

pub fn qspacedestroy(sh: &mut Shell, args: Args) -> CmdResult {
    let (force, confirmed) = (args.flag('f'), args.flag('y'));
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    if !confirmed {
        let check = fetch(sh, Some(name.clone())).map(drop);
        if !sh.confirm_checked(check)? {
            sh.warn("Queue space not destroyed");
            return Ok(());
        }
    }
    sh.call(Request::QueueSpace(QueueSpaceRequest::Destroy { name, force }))?;
    Ok(())
}

pub fn qopen(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    sh.call(Request::QueueSpace(QueueSpaceRequest::Open { name: name.clone() }))?;
    sh.open_qspace = Some(name);
    forget_selection(sh);
    Ok(())
}

pub fn qclose(sh: &mut Shell, _args: Args) -> CmdResult {
    sh.call(Request::QueueSpace(QueueSpaceRequest::Close))?;
    sh.open_qspace = None;
    forget_selection(sh);
    Ok(())
}

/// `qset`'s queue and `qscan`'s criteria belong to the queue space they were chosen in:
/// message commands after another `qopen` must not act on a same-named queue elsewhere.
fn forget_selection(sh: &mut Shell) {
    sh.target_queue = None;
    sh.criteria = Default::default();
}

pub fn qaddext(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    let pages = sh.required(&mut pos, "Number of pages: ", |s| {
        number("Number of pages", s, 1..=u64::from(u32::MAX))
    })?;
    sh.call(Request::QueueSpace(QueueSpaceRequest::AddExtent { name, pages }))?;
    Ok(())
}

/// `qspacemove [qspace [dlindex]]`: moves an inactive queue space to another entry.
pub fn qspacemove(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    let index = sh.required(&mut pos, "Device list index: ", super::device::dl_index)?;
    sh.call_long(Request::QueueSpace(QueueSpaceRequest::Move { name, index }))?;
    Ok(())
}

pub fn qsize(sh: &mut Shell, args: Args) -> CmdResult {
    let nonpersistent = memory_option(&args)?.unwrap_or(MemorySize::ZERO);
    let json = args.json;
    let mut pos = Positionals::new(args.positionals);
    let pages = sh
        .required(&mut pos, &format!("{PAGES}: "), |s| number(PAGES, s, 1..=u64::from(u32::MAX)))?;
    let queues = sh.required(&mut pos, &format!("{QUEUES}: "), count(QUEUES, COUNT_MAX))?;
    let transactions = sh.required(&mut pos, &format!("{TRANS}: "), count(TRANS, COUNT_MAX))?;
    let processes = sh.required(&mut pos, &format!("{PROCS}: "), count(PROCS, COUNT_MAX))?;
    let messages = sh.required(&mut pos, &format!("{MSGS}: "), count(MSGS, MESSAGES_MAX))?;
    let request =
        QueueSpaceRequest::Size { pages, queues, transactions, processes, messages, nonpersistent };
    if let Reply::Size(s) = sh.call(Request::QueueSpace(request))?.reply {
        let text = if sh.wants_json(json) { render::json(&s) } else { render::size(&s) };
        sh.output(&text);
    }
    Ok(())
}

pub fn ipcs(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let name = sh.text(&mut pos, NAME)?;
    let request = QueueSpaceRequest::Ipcs { name: Some(name).filter(|n| !n.is_empty()) };
    if let Reply::Attachments(list) = sh.call(Request::QueueSpace(request))?.reply {
        if sh.wants_json(args.json) {
            sh.output(&render::json(&list));
        } else if !list.is_empty() {
            sh.output(&render::attachments(&list));
        }
    }
    Ok(())
}

pub fn ipcrm(sh: &mut Shell, args: Args) -> CmdResult {
    let (force, confirmed) = (args.flag('f'), args.flag('y'));
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, qspace_name)?;
    if force && !confirmed {
        let check = fetch(sh, Some(name.clone())).map(drop);
        if !sh.confirm_checked(check)? {
            sh.warn("IPC resources not removed");
            return Ok(());
        }
    }
    sh.call(Request::QueueSpace(QueueSpaceRequest::Ipcrm { name, force }))?;
    Ok(())
}
