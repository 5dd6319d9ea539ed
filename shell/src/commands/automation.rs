//! Forwarders and threshold commands: boot, shutdown, printserver, qthlog, qthtest.

use super::number;
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::names::check_queue_name;
use qm_common::protocol::{AutomationRequest, Reply, Request};

/// The `-i` server id of `boot` and `shutdown`.
pub fn server_id(args: &Args) -> Result<Option<u32>, String> {
    args.value('i').map(|v| number("Server id", v, 1..=u32::MAX).map_err(|e| e.message)).transpose()
}

pub fn boot(sh: &mut Shell, args: Args) -> CmdResult {
    let id = server_id(&args)?
        .ok_or("boot: give the forwarder's server id with -i (e.g. boot -i 1002)")?;
    sh.call(Request::Automation(AutomationRequest::Boot { id }))?;
    Ok(())
}

pub fn shutdown(sh: &mut Shell, args: Args) -> CmdResult {
    let id = server_id(&args)?;
    let queue = args.value('q').map(str::to_string);
    if let Some(q) = &queue {
        check_queue_name(q).map_err(|e| e.message)?;
    }
    if id.is_none() && queue.is_none() {
        return Err("shutdown: give a server id with -i or a queue with -q".into());
    }
    if id.is_some() && queue.is_some() {
        return Err(
            "shutdown: give either -i ID or -q QUEUE, not both (shutdown -i ID | -q QUEUE)".into(),
        );
    }
    sh.call(Request::Automation(AutomationRequest::Shutdown { id, queue }))?;
    Ok(())
}

pub fn printserver(sh: &mut Shell, args: Args) -> CmdResult {
    if let Reply::Servers(list) = sh.call(Request::Automation(AutomationRequest::Servers))?.reply {
        if sh.wants_json(args.json) {
            sh.output(&render::json(&list));
        } else if list.is_empty() {
            sh.info("No forwarders are configured");
        } else {
            let text = render::servers(&list);
            sh.output(&text);
        }
    }
    Ok(())
}

pub fn qthlog(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = args.positionals.first().cloned();
    if let Reply::Firings(list) =
        sh.call(Request::Automation(AutomationRequest::ThresholdLog { queue }))?.reply
    {
        if sh.wants_json(args.json) {
            sh.output(&render::json(&list));
        } else if list.is_empty() {
            sh.info("No threshold commands have run");
        } else {
            let text = render::firings(&list, sh.verbose);
            sh.output(&text);
        }
    }
    Ok(())
}

pub fn qthtest(sh: &mut Shell, args: Args) -> CmdResult {
    let nonpersistent = args.flag('n');
    let json = args.json;
    let mut pos = Positionals::new(args.positionals);
    let queue = sh.required(&mut pos, "Queue name: ", |s| {
        check_queue_name(s)?;
        Ok(s.to_string())
    })?;
    let request = AutomationRequest::ThresholdTest { queue, nonpersistent };
    if let Reply::Firing(record) = sh.call(Request::Automation(request))?.reply {
        let text = if sh.wants_json(json) {
            render::json(&record)
        } else {
            render::firings(&[*record.clone()], true)
        };
        sh.output(&text);
        if record.exit != Some(0) {
            return Err(format!("the threshold command ended with {}", record.outcome));
        }
    }
    Ok(())
}
