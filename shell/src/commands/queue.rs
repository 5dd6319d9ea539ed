//! Queue commands on the open queue space: qcreate, qchange, qdestroy, qinfo.

use super::number;
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::QmResult;
use qm_common::names::{check_command, check_queue_name};
use qm_common::order::{OutOfOrder, QueueOrder};
use qm_common::protocol::{QueueRequest, QueueSpaceRequest, Reply, Request};
use qm_common::queue::{
    AttrsChange, DefaultExpiration, DeliveryPolicy, DestroyMode, Persistence, QueueChange,
    QueueDef, RETRIES_MAX, RETRY_DELAY_MAX, check_annotation, no_more_queues, parse_enabled,
    parse_idle_expiry, parse_max_messages, parse_max_size,
};
use qm_common::threshold::{Limit, LimitSet, Threshold, parse_high, parse_low};

const NAME: &str = "Queue name: ";
const HIGH: &str = "High limit for queue capacity warning (b for bytes used, B for blocks used,\n  % for percent used, m for messages";

/// A queue name as typed.
pub fn queue_name(text: &str) -> QmResult<String> {
    check_queue_name(text)?;
    Ok(text.to_string())
}

/// A queue capacity command as typed.
pub fn command(text: &str) -> QmResult<String> {
    check_command("Queue capacity command", text)?;
    Ok(text.to_string())
}

/// The `-d`, `-n` and `-e` options and the attributes, each absent unless given.
struct QueueOptions {
    delivery: Option<DeliveryPolicy>,
    nonpersistent: Option<Threshold>,
    expiration: Option<DefaultExpiration>,
    attrs: AttrsChange,
}

fn msg<T>(r: QmResult<T>) -> Result<T, String> {
    r.map_err(|e| e.message)
}

fn options(args: &Args) -> Result<QueueOptions, String> {
    Ok(QueueOptions {
        delivery: args.value('d').map(|v| msg(v.parse())).transpose()?,
        nonpersistent: args
            .value('n')
            .map(|v| msg(Threshold::parse_nonpersistent(v)))
            .transpose()?,
        expiration: args.value('e').map(|v| msg(v.parse())).transpose()?,
        attrs: attrs_change(args)?,
    })
}

/// The attribute options: -L, -S, -E, -D, -a, -I, -P.
fn attrs_change(args: &Args) -> Result<AttrsChange, String> {
    let annotation = args.value('a').map(|a| msg(check_annotation(a)).map(|()| a.to_string()));
    Ok(AttrsChange {
        max_messages: args.value('L').map(|v| msg(parse_max_messages(v))).transpose()?,
        max_size: args.value('S').map(|v| msg(parse_max_size(v))).transpose()?,
        enqueue_enabled: args.value('E').map(|v| msg(parse_enabled("Enqueue", v))).transpose()?,
        dequeue_enabled: args.value('D').map(|v| msg(parse_enabled("Dequeue", v))).transpose()?,
        annotation: annotation.transpose()?,
        idle_expiry: args.value('I').map(|v| msg(parse_idle_expiry(v))).transpose()?,
        persistence: args.value('P').map(|v| msg(v.parse::<Persistence>())).transpose()?,
    })
}

/// The persistent high and low marks, prompting with `high_default`/`low_default`.
fn limits(
    sh: &mut Shell,
    pos: &mut Positionals,
    high_default: Limit,
    low_default: Option<Limit>,
    announce: bool,
) -> Result<(Limit, Limit), String> {
    let say = |what: &str, l: Limit| announce.then(|| format!("Default {what} threshold: {l}"));
    let high_line = say("high", high_default);
    let high = sh.optional(
        pos,
        &format!("{HIGH} [default={high_default}]): "),
        high_default,
        high_line.as_deref(),
        |s| parse_high(s, LimitSet::Persistent),
    )?;
    let low_default =
        low_default.filter(|l| l.unit == high.unit).unwrap_or(Limit { value: 0, unit: high.unit });
    let low_line = say("low", low_default);
    loop {
        let typed = pos.peek().is_none();
        let low = sh.optional(
            pos,
            &format!("Reset (low) limit for queue capacity warning [default={low_default}]: "),
            low_default,
            low_line.as_deref(),
            |s| parse_low(s, high),
        )?;
        // Low against high (a default taken included), checked now so that a terminal asks
        // for the low limit again rather than discarding every answer at the end.
        let marks = Threshold { high, low, command: String::new() };
        match marks.validate(LimitSet::Persistent) {
            Err(e) if typed && sh.input.interactive() => {
                eprintln!("ERROR: {}", qm_common::error::shown_lines(&e.message));
            }
            // Otherwise refused with the whole definition, as before.
            _ => return Ok((high, low)),
        }
    }
}

pub fn qcreate(sh: &mut Shell, args: Args) -> CmdResult {
    let opts = options(&args)?;
    sh.require_open()?;
    // At a terminal a full queue space is refused before the eight prompts. A script keeps
    // Tuxedo's behaviour (answers read, then refused) so that its answer lines are never run
    // as commands.
    let request = Request::QueueSpace(QueueSpaceRequest::List { name: None });
    if sh.input.interactive()
        && let Reply::QueueSpace(info) = sh.call(request)?.reply
        && info.queues_defined >= info.params.queues
    {
        return Err(no_more_queues(&info.params.name, info.params.queues).message);
    }
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, queue_name)?;
    let mut def = QueueDef::new(name);
    def.order = sh.optional(
        &mut pos,
        "queue order (priority, time, fifo, lifo): ",
        QueueOrder::default(),
        Some("Default queue order: fifo"),
        str::parse,
    )?;
    def.out_of_order = sh.optional(
        &mut pos,
        "out-of-ordering enqueuing (top, msgid, [default=none]): ",
        OutOfOrder::default(),
        Some("Default out-of-ordering enqueuing: none"),
        str::parse,
    )?;
    def.retries =
        sh.optional(&mut pos, "retries [default=0]: ", 0, Some("Default retries: 0"), |s| {
            number("Retries", s, 0..=RETRIES_MAX)
        })?;
    def.retry_delay = sh.optional(
        &mut pos,
        "retry delay in seconds [default=0]: ",
        0,
        Some("Default retry delay: 0"),
        |s| number("Retry delay in seconds", s, 0..=RETRY_DELAY_MAX),
    )?;
    let (high, low) = limits(sh, &mut pos, Threshold::default().high, None, true)?;
    let cmd = sh.optional(
        &mut pos,
        "queue capacity command: ",
        String::new(),
        Some("No default queue capacity command"),
        command,
    )?;
    def.threshold = Threshold { high, low, command: cmd };
    def.delivery = opts.delivery.unwrap_or_default();
    def.expiration = opts.expiration.unwrap_or_default();
    if let Some(n) = opts.nonpersistent {
        def.nonpersistent_threshold = n;
    }
    opts.attrs.apply(&mut def.attrs);
    def.validate().map_err(|e| e.message)?;
    let name = def.name.clone();
    sh.call(Request::Queue(QueueRequest::Create(def)))?;
    sh.info(&format!("Queue '{name}' created"));
    Ok(())
}

fn fetch(sh: &mut Shell, name: &str) -> Result<QueueDef, String> {
    match sh.call(Request::Queue(QueueRequest::Get { name: name.to_string() }))?.reply {
        Reply::Queue(def) => Ok(*def),
        other => Err(format!("unexpected reply from qmd: {other:?}")),
    }
}

pub fn qchange(sh: &mut Shell, args: Args) -> CmdResult {
    let opts = options(&args)?;
    sh.require_open()?;
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, queue_name)?;
    let cur = fetch(sh, &name)?;
    let ooo = sh.optional(
        &mut pos,
        &format!("out-of-ordering enqueuing (top, msgid, [default={}]): ", cur.out_of_order),
        cur.out_of_order,
        None,
        str::parse,
    )?;
    let retries = sh.optional(
        &mut pos,
        &format!("retries [default={}]: ", cur.retries),
        cur.retries,
        None,
        |s| number("Retries", s, 0..=RETRIES_MAX),
    )?;
    let delay = sh.optional(
        &mut pos,
        &format!("retry delay in seconds [default={}]: ", cur.retry_delay),
        cur.retry_delay,
        None,
        |s| number("Retry delay in seconds", s, 0..=RETRY_DELAY_MAX),
    )?;
    let (high, low) = limits(sh, &mut pos, cur.threshold.high, Some(cur.threshold.low), false)?;
    let had_positional_cmd = pos.peek().is_some();
    let cmd = if had_positional_cmd {
        // Given as an argument, "" clears the command rather than keeping it.
        sh.optional(&mut pos, "", String::new(), None, command)?
    } else {
        let prompt = match cur.threshold.command.as_str() {
            "" => "queue capacity command: ".to_string(),
            c => format!("queue capacity command [default={c}]: "),
        };
        sh.optional(&mut pos, &prompt, cur.threshold.command.clone(), None, command)?
    };
    let change = QueueChange {
        name,
        out_of_order: ooo,
        retries,
        retry_delay: delay,
        threshold: Threshold { high, low, command: cmd },
        nonpersistent_threshold: opts.nonpersistent,
        delivery: opts.delivery,
        expiration: opts.expiration,
        attrs: opts.attrs,
    };
    sh.call(Request::Queue(QueueRequest::Change(change)))?;
    Ok(())
}

fn alias_name(text: &str) -> QmResult<String> {
    qm_common::names::check_alias(text)?;
    Ok(text.to_string())
}

pub fn qalias(sh: &mut Shell, args: Args) -> CmdResult {
    sh.require_open()?;
    let mut pos = Positionals::new(args.positionals);
    let queue = sh.required(&mut pos, NAME, queue_name)?;
    let alias = sh.required(&mut pos, "Alias: ", alias_name)?;
    sh.call(Request::Queue(QueueRequest::Alias { queue, alias }))?;
    Ok(())
}

pub fn qunalias(sh: &mut Shell, args: Args) -> CmdResult {
    sh.require_open()?;
    let mut pos = Positionals::new(args.positionals);
    let alias = sh.required(&mut pos, "Alias: ", alias_name)?;
    sh.call(Request::Queue(QueueRequest::Unalias { alias }))?;
    Ok(())
}

pub fn qdestroy(sh: &mut Shell, args: Args) -> CmdResult {
    let mode = match (args.flag('p'), args.flag('f')) {
        (true, true) => return Err("qdestroy: -p and -f cannot be combined".into()),
        (true, false) => DestroyMode::Purge,
        (false, true) => DestroyMode::Force,
        (false, false) => DestroyMode::Normal,
    };
    let confirmed = args.flag('y');
    sh.require_open()?;
    let mut pos = Positionals::new(args.positionals);
    let name = sh.required(&mut pos, NAME, queue_name)?;
    if !confirmed {
        let check = fetch(sh, &name).map(drop);
        if !sh.confirm_checked(check)? {
            sh.warn("Queue not destroyed");
            return Ok(());
        }
    }
    sh.call(Request::Queue(QueueRequest::Destroy { name, mode }))?;
    Ok(())
}

pub fn qinfo(sh: &mut Shell, args: Args) -> CmdResult {
    let name = args.positionals.first().cloned();
    if let Reply::Queues(listing) = sh.call(Request::Queue(QueueRequest::Info { name }))?.reply {
        let text = if sh.wants_json(args.json) {
            render::json(&listing)
        } else if listing.queues.is_empty() {
            // qmd said "no queues defined": an empty table would add nothing.
            return Ok(());
        } else {
            render::queues(&listing, sh.verbose)
        };
        sh.output(&text);
    }
    Ok(())
}
