//! Moving messages from scripts: qenqueue, qdequeue, and begin/commit/abort around them.

use super::number;
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::QmResult;
use qm_common::managers::Managers;
use qm_common::message::{
    DequeueCtl, EnqueueCtl, Message, MsgId, Placement, Qos, Select, escape_bytes, parse_corrid,
};
use qm_common::names::check_queue_name;
use qm_common::profile::Profile;
use qm_common::protocol::{ClientKind, DataRequest, Reply, Request};
pub use qm_common::time::parse_expiry;
use qm_common::time::parse_time_spec;
use std::io::{IsTerminal, Read, Write};

const QUEUE: &str = "Queue name: ";

fn queue_name(text: &str) -> QmResult<String> {
    check_queue_name(text)?;
    Ok(text.to_string())
}

fn msg<T>(r: QmResult<T>) -> Result<T, String> {
    r.map_err(|e| e.message)
}

/// The enqueue options of `qenqueue`.
pub fn enqueue_ctl(args: &Args) -> Result<EnqueueCtl, String> {
    let mut ctl = EnqueueCtl::default();
    if let Some(p) = args.value('p') {
        ctl.priority = Some(msg(number("Priority", p, 1..=100u8))?);
    }
    if let Some(t) = args.value('t') {
        ctl.available = Some(msg(parse_time_spec("Availability time", t))?);
    }
    if let Some(e) = args.value('e') {
        ctl.expiration = Some(msg(parse_expiry(e))?);
    }
    if let Some(c) = args.value('i') {
        ctl.corrid = msg(parse_corrid(c))?;
    }
    ctl.reply_queue = args.value('r').map(str::to_string);
    ctl.failure_queue = args.value('f').map(str::to_string);
    if let Some(d) = args.value('d') {
        ctl.delivery = Some(msg(d.parse::<Qos>())?);
    }
    if let Some(q) = args.value('q') {
        ctl.reply_qos = Some(msg(q.parse::<Qos>())?);
    }
    if let Some(u) = args.value('u') {
        ctl.urcode = msg(number("User return code", u, i64::MIN..=i64::MAX))?;
    }
    if let Some(w) = args.value('w') {
        ctl.wait_ms = Some(msg(number("Wait seconds", w, 0..=86_400u64))? * 1000);
    }
    ctl.placement = match (args.flag('T'), args.value('b')) {
        (true, Some(_)) => {
            return Err("-T (top of queue) and -b (before a message) cannot be combined".into());
        }
        (true, None) => Placement::Top,
        (false, Some(id)) => Placement::Before(msg(MsgId::parse(id))?),
        (false, None) => Placement::Ordered,
    };
    msg(ctl.validate())?;
    Ok(ctl)
}

/// Reads all of standard input. Only when the commands come from `-c`: otherwise standard
/// input holds the commands (a script, or the terminal), and a body read from it would
/// swallow them.
fn stdin_body(sh: &mut Shell) -> Result<Vec<u8>, String> {
    if !sh.script_mode {
        return Err("the body cannot be read from standard input when the commands come from \
                    it: give the body as an argument or with -F FILE"
            .into());
    }
    // Standard input holds one body: a second read would silently enqueue an empty one.
    if std::mem::replace(&mut sh.stdin_read, true) {
        return Err("standard input was read for an earlier message body: give this body as \
                    an argument or with -F FILE"
            .into());
    }
    read_body(std::io::stdin().lock(), "standard input")
}

/// Reads a body from `source` (`what` names it), no further than one byte over the body
/// limit: a source far too large (a wrong file, `/dev/zero`) is refused, not loaded.
fn read_body(source: impl Read, what: &str) -> Result<Vec<u8>, String> {
    use qm_common::message::BODY_MAX;
    let mut buf = Vec::new();
    source
        .take(BODY_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if buf.len() > BODY_MAX {
        return Err(format!("Message body: {what} holds more than the limit of {BODY_MAX} bytes"));
    }
    Ok(buf)
}

/// The body: the argument, else `-F FILE` (`-` for standard input), else standard input
/// when commands come from `-c` and it is not a terminal, else asked for at a terminal, else
/// empty.
fn body(sh: &mut Shell, args: &Args, pos: &mut Positionals) -> Result<Vec<u8>, String> {
    if let Some(text) = pos.take() {
        if args.value('F').is_some() {
            return Err("give the body either as an argument or with -F, not both".into());
        }
        // A script in another encoding (Latin-1, say) gives its bodies as they are.
        return Ok(if sh.raw_line { crate::input::raw_bytes(&text) } else { text.into_bytes() });
    }
    match args.value('F') {
        Some("-") => stdin_body(sh),
        Some(file) => {
            let opened = std::fs::File::open(file).map_err(|e| format!("-F {file}: {e}"))?;
            // A file's size is known: it is named as for a body given any other way.
            if let Some(meta) = opened.metadata().ok().filter(|m| m.is_file()) {
                qm_common::message::check_body(meta.len() as usize).map_err(|e| e.message)?;
            }
            read_body(opened, &format!("-F {file}"))
        }
        None if sh.script_mode && !std::io::stdin().is_terminal() => stdin_body(sh),
        // At a terminal a body left out is asked for, not taken as empty unseen (an empty
        // answer is an empty body, on purpose).
        None if sh.input.interactive() => Ok(sh.text(pos, "Message body: ")?.into_bytes()),
        None => Ok(Vec::new()),
    }
}

/// A bad option caught here ends with `(QMEINVAL)`, like those qmd refuses, so that scripts
/// can tell failures apart the same way.
fn invalid(why: String) -> String {
    format!("{why} ({})", qm_common::Diagnostic::Inval.name())
}

pub fn qenqueue(sh: &mut Shell, args: Args) -> CmdResult {
    let ctl = enqueue_ctl(&args).map_err(invalid)?;
    let mut pos = Positionals::new(args.positionals.clone());
    let queue = sh.required(&mut pos, QUEUE, queue_name)?;
    let body = body(sh, &args, &mut pos).map_err(invalid)?;
    if let Some(mut managers) = elsewhere(sh, &queue)? {
        let routed = sh.runtime().block_on(managers.enqueue(&queue, &body, &ctl));
        show_msgid(sh, routed.map_err(data_error)?.value);
        return Ok(());
    }
    let request = DataRequest::Enqueue { qspace: None, queue, ctl, body };
    if let Reply::Enqueued(id) = sh.call(Request::Data(request))?.reply {
        show_msgid(sh, id);
    }
    Ok(())
}

/// The msgid is the command's result: standard output, as JSON under --json.
fn show_msgid(sh: &Shell, id: MsgId) {
    let text = if sh.json_now {
        crate::render::json(&serde_json::json!({ "msgid": id.to_string() }))
    } else {
        id.to_string()
    };
    sh.output(&text);
}

/// A queue named in full, `MANAGER/QSPACE/QUEUE`, where a profile names MANAGER: reached
/// on a connection of its own, whatever this session has open. `None` for a queue of the
/// open queue space (also one whose alias holds `/`); the profile is read only for a name
/// with two `/` at least.
fn elsewhere(sh: &Shell, queue: &str) -> Result<Option<Managers>, String> {
    if queue.matches('/').count() < 2 {
        return Ok(None);
    }
    let profile = Profile::load()?;
    let first = queue.split('/').next().unwrap_or_default();
    if profile.find(first).is_none() {
        return Ok(None);
    }
    if let Some(txn) = sh.transaction {
        return Err(format!(
            "{queue} is a queue of manager {first}, which transaction {txn} of this session \
             cannot take part in; commit or abort it first ({})",
            qm_common::Diagnostic::Tran.name()
        ));
    }
    Ok(Some(Managers::new(profile, "qmadmin", ClientKind::Application)))
}

/// A data-plane failure as qmadmin says them: the sentence, then its QME* name.
fn data_error(e: qm_common::QmError) -> String {
    format!("{} ({})", e.message, e.diagnostic.name())
}

/// The dequeue options of `qdequeue`.
pub fn dequeue_ctl(args: &Args) -> Result<DequeueCtl, String> {
    let select = match (args.value('m'), args.value('i')) {
        (Some(_), Some(_)) => {
            return Err("-m (by message id) and -i (by correlation id) cannot be combined".into());
        }
        (Some(m), None) => Select::Msgid(msg(MsgId::parse(m))?),
        (None, Some(c)) => Select::Corrid(msg(parse_corrid(c))?),
        (None, None) => Select::First,
    };
    let wait_ms = match args.value('w') {
        Some(w) => Some(msg(number("Wait seconds", w, 0..=86_400u64))? * 1000),
        None => None,
    };
    Ok(DequeueCtl { select, peek: args.flag('k'), wait_ms })
}

fn show_message(sh: &Shell, m: &Message, body_only: bool, json: bool) {
    if json {
        sh.output(&render::json(&render::MessageJson::from(m)));
    } else if body_only {
        let mut out = std::io::stdout();
        let _ = out.write_all(&m.body);
        // At a terminal the next prompt is drawn from the start of the line and would wipe
        // out a body's last line; piped, the body stays exactly as it was enqueued.
        if out.is_terminal() && !m.body.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    } else {
        let mut head = format!(
            "msgid={} priority={} corrid={} retries={} urcode={} delivery={}",
            m.msgid,
            m.priority,
            escape_bytes(&m.corrid),
            m.retries,
            m.urcode,
            m.delivery,
        );
        // What a script needs to answer the message, when the sender set it.
        if let Some(q) = &m.reply_queue {
            head += &format!(" reply_queue={q}");
        }
        if let Some(q) = &m.failure_queue {
            head += &format!(" failure_queue={q}");
        }
        if let Some(q) = &m.reply_qos {
            head += &format!(" reply_qos={q}");
        }
        sh.output(&format!("{head}\n{}", qm_common::message::display_body(&m.body)));
    }
}

pub fn qdequeue(sh: &mut Shell, args: Args) -> CmdResult {
    let ctl = dequeue_ctl(&args).map_err(invalid)?;
    let mut pos = Positionals::new(args.positionals.clone());
    let queue = sh.required(&mut pos, QUEUE, queue_name)?;
    if let Some(mut managers) = elsewhere(sh, &queue)? {
        let routed = sh.runtime().block_on(managers.dequeue(&queue, &ctl));
        let m = routed.map_err(data_error)?.value;
        show_message(sh, &m, args.flag('B'), sh.wants_json(args.json));
        return Ok(());
    }
    let request = DataRequest::Dequeue { qspace: None, queue, ctl };
    if let Reply::Message(m) = sh.call(Request::Data(request))?.reply {
        show_message(sh, &m, args.flag('B'), sh.wants_json(args.json));
    }
    Ok(())
}

pub fn begin(sh: &mut Shell, args: Args) -> CmdResult {
    let timeout = match args.value('t') {
        Some(t) => Some(msg(number("Transaction time-out", t, 1..=86_400u32))?),
        None => None,
    };
    if let Reply::Transaction(id) =
        sh.call(Request::Data(DataRequest::Begin { qspace: None, timeout_secs: timeout }))?.reply
    {
        sh.transaction = Some(id);
        sh.info(&format!("Transaction {id} begun"));
    }
    Ok(())
}

pub fn commit(sh: &mut Shell, _args: Args) -> CmdResult {
    // qmd lets go of the session's transaction whether or not it commits.
    sh.transaction = None;
    sh.call(Request::Data(DataRequest::Commit))?;
    sh.info("Transaction committed");
    Ok(())
}

pub fn abort(sh: &mut Shell, _args: Args) -> CmdResult {
    sh.transaction = None;
    sh.call(Request::Data(DataRequest::Abort))?;
    sh.info("Transaction rolled back");
    Ok(())
}
