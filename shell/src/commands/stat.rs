//! `qstat`: a live view of a queue space. At a terminal it redraws in place every second
//! until Ctrl-C, as `top` does; piped, with `--once` or `--json`, it prints one view, whose
//! rates come from two looks a second apart.

use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::protocol::{QueueSpaceRequest, Reply, Request};
use qm_common::stat::SpaceStat;
use std::io::IsTerminal;
use std::time::Duration;

/// Time between two looks.
const INTERVAL: Duration = Duration::from_secs(1);

/// Clears a terminal and puts the cursor at its top left.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub fn qstat(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals.clone());
    let name = pos.take().filter(|n| !n.is_empty());
    let json = sh.wants_json(args.json);
    let live = !args.once && !json && std::io::stdout().is_terminal() && sh.input.interactive();
    let mut earlier = look(sh, &name)?;
    loop {
        if !sh.pause(INTERVAL) {
            return Ok(());
        }
        let now = look(sh, &name)?;
        if json {
            sh.output(&render::json(&render::stat_json(&now, &earlier)));
        } else if live {
            print!("{CLEAR}");
            sh.output(&render::stat(&now, &earlier, "Ctrl-C to stop"));
        } else {
            sh.output(&render::stat(&now, &earlier, ""));
        }
        if !live {
            return Ok(());
        }
        earlier = now;
    }
}

fn look(sh: &mut Shell, name: &Option<String>) -> Result<SpaceStat, crate::shell::Failure> {
    let request = Request::QueueSpace(QueueSpaceRequest::Stat { name: name.clone() });
    match sh.call(request)?.reply {
        Reply::Stat(s) => Ok(*s),
        other => Err(format!("unexpected reply from qmd: {other:?}")),
    }
}
