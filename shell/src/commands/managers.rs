//! `managers`: the queue managers the profile names and whether they answer (qm's own,
//! after seed 004's profile; Tuxedo has none). Also run without a daemon as
//! `qmadmin managers`.

use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Shell};
use qm_common::managers::ManagerState;
use qm_common::profile::Profile;

pub fn managers(sh: &mut Shell, args: Args) -> CmdResult {
    let json = sh.wants_json(args.json);
    let (text, _) = listing(sh.runtime(), json)?;
    sh.output(&text);
    Ok(())
}

/// The listing as text or JSON, and whether every manager answered.
pub fn listing(runtime: &tokio::runtime::Runtime, json: bool) -> Result<(String, bool), String> {
    let profile = Profile::load()?;
    let states = runtime.block_on(qm_common::managers::survey(&profile, "qmadmin"));
    let all_up = states.iter().all(|s| s.up);
    let text = match json {
        true => render::json(&states),
        false if states.is_empty() => format!(
            "No queue manager is named: set {} or list managers in a profile ({}; see help \
             managers)",
            qm_common::profile::MANAGER_ENV,
            profile.read_text()
        ),
        false => render::managers(&states),
    };
    Ok((text, all_up))
}

/// What a manager's state column says.
pub fn state_text(s: &ManagerState) -> String {
    // Which of several addresses answered (an active daemon or its standby).
    let at = match &s.answered {
        Some(a) if s.place.contains(',') => format!(" at {a}"),
        _ => String::new(),
    };
    match (&s.error, s.up) {
        (None, true) => format!("up (pid {}){at}", s.pid.unwrap_or(0)),
        (Some(e), true) => format!("up (pid {}){at}: {e}", s.pid.unwrap_or(0)),
        (Some(e), false) => format!("down: {e}"),
        (None, false) => "down".to_string(),
    }
}
