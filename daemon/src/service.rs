//! Calling a service: the command configured for a queue's name, run once per forwarded
//! message with the body on standard input. Exit status 0 is success and standard output
//! is the reply; the service may write a user return code to the file named by
//! `QM_URCODE_FILE` (else it is 0 on success and the exit status on failure).

use crate::command::{self, Ending, ShellCommand};
use crate::threshold::CommandEnv;
use qm_common::config::ServiceDef;
use qm_common::message::{BODY_MAX, Message, escape_bytes};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a service answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub body: Vec<u8>,
    pub urcode: i64,
    /// Something wrong that did not fail the call (an unusable user return code).
    pub warning: Option<String>,
}

/// How a call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Called {
    Success(Reply),
    /// The service failed (or could not be called); `why` is for the forwarder's last error.
    Failure {
        reply: Reply,
        why: String,
    },
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// A fresh path for a service's return code, in the user's private directory: at a
/// predictable path in `/tmp`, another user could plant a return code for us to read, or a
/// link for the service to write through.
fn urcode_file() -> Result<std::path::PathBuf, String> {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let path =
        qm_common::paths::ensure_private_dir()?.join(format!("urcode-{}-{n}", std::process::id()));
    // A leftover of a killed qmd that had our pid is not this call's answer.
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// Most bytes read of what a service wrote to `$QM_URCODE_FILE`.
const URCODE_MAX: u64 = 256;

/// Reads the user return code the service wrote: `None` when it wrote none, an error naming
/// the valid range when what it wrote is not one.
fn read_urcode(path: &std::path::Path, service: &str) -> Result<Option<i64>, String> {
    use std::io::Read;
    // A number takes a few bytes: a service writing more (by mistake) costs no memory.
    let Ok(file) = std::fs::File::open(path) else { return Ok(None) };
    let mut bytes = Vec::new();
    if file.take(URCODE_MAX).read_to_end(&mut bytes).is_err() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>().map(Some).map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        format!(
            "service {service} wrote an unusable user return code '{shown}' to $QM_URCODE_FILE; \
             it must be a whole number from {} to {} (0 was used)",
            i64::MIN,
            i64::MAX
        )
    })
}

/// Calls `service` for `msg` of `qspace`, within `left` of the forwarder's transaction
/// time-out `timeout` (the one named when the service is killed).
pub async fn call(
    env: &CommandEnv,
    service: &str,
    def: Option<&ServiceDef>,
    qspace: &str,
    msg: &Message,
    timeout: Duration,
    left: Duration,
) -> Called {
    let Some(def) = def else {
        let why = format!("no service {service} is defined in the configuration");
        return Called::Failure {
            reply: Reply { body: Vec::new(), urcode: 0, warning: None },
            why,
        };
    };
    let urcode_path = match urcode_file() {
        Ok(p) => p,
        Err(why) => {
            let why = format!("service {service} not called: {why}");
            return Called::Failure {
                reply: Reply { body: Vec::new(), urcode: 0, warning: None },
                why,
            };
        }
    };
    let mut vars = env.base();
    vars.extend([
        ("QM_QSPACE", qspace.to_string()),
        ("QM_QUEUE", service.to_string()),
        ("QM_SERVICE", service.to_string()),
        ("QM_MSGID", msg.msgid.to_string()),
        ("QM_CORRID", escape_bytes(&msg.corrid)),
        ("QM_PRIORITY", msg.priority.to_string()),
        ("QM_RETRIES", msg.retries.to_string()),
        ("QM_URCODE", msg.urcode.to_string()),
        ("QM_REPLY_QUEUE", msg.reply_queue.clone().unwrap_or_default()),
        ("QM_FAILURE_QUEUE", msg.failure_queue.clone().unwrap_or_default()),
        ("QM_URCODE_FILE", urcode_path.display().to_string()),
    ]);
    let outcome = command::run(ShellCommand {
        command: &def.command,
        env: vars,
        stdin: Some(msg.body.clone()),
        cwd: env.cwd(),
        limit: left,
        // A service is a synchronous call: nothing it started outlives it.
        kill_leftovers: true,
    })
    .await;
    let (written, warning) = match read_urcode(&urcode_path, service) {
        Ok(w) => (w, None),
        Err(why) => (Some(0), Some(why)),
    };
    let _ = std::fs::remove_file(&urcode_path);
    let reply = |default: i64| Reply {
        body: outcome.stdout.clone(),
        urcode: written.unwrap_or(default),
        warning: warning.clone(),
    };
    if outcome.stdout.len() > BODY_MAX {
        let why = format!(
            "service {service}: its reply exceeds the message body limit of {BODY_MAX} bytes \
             (4 MiB)"
        );
        return Called::Failure { reply: Reply { body: Vec::new(), ..reply(-1) }, why };
    }
    match &outcome.ending {
        Ending::Exited(0) => Called::Success(reply(0)),
        Ending::Exited(code) => {
            let first =
                String::from_utf8_lossy(&outcome.stderr).lines().next().unwrap_or("").to_string();
            let why = format!(
                "service {service} exited with status {code}{}",
                if first.is_empty() { String::new() } else { format!(": {first}") }
            );
            Called::Failure { reply: reply(i64::from(*code)), why }
        }
        Ending::TimedOut(_) => Called::Failure {
            reply: reply(-1),
            why: format!(
                "service {service}: killed after the {} time limit (the forwarder's -t)",
                command::seconds(timeout)
            ),
        },
        other => Called::Failure {
            reply: reply(-1),
            why: format!("service {service}: {}", other.describe()),
        },
    }
}
