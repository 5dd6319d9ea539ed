//! Calling a service: the command configured for a queue's name, run once per forwarded
//! message with the body on standard input. Exit status 0 is success and standard output
//! is the reply; the service may write a user return code to the file named by
//! `QM_URCODE_FILE` (else it is 0 on success and the exit status on failure).

use crate::command::{self, Ending, ShellCommand};
use crate::threshold::CommandEnv;
use qm_common::config::ServiceDef;
use qm_common::message::{Message, escape_bytes};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a service answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub body: Vec<u8>,
    pub urcode: i64,
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

fn urcode_file() -> std::path::PathBuf {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("qm-urcode-{}-{n}", std::process::id()))
}

/// Calls `service` for `msg` of `qspace`, within `limit`.
pub async fn call(
    env: &CommandEnv,
    service: &str,
    def: Option<&ServiceDef>,
    qspace: &str,
    msg: &Message,
    limit: Duration,
) -> Called {
    let Some(def) = def else {
        let why = format!("no service {service} is defined in the configuration");
        return Called::Failure { reply: Reply { body: Vec::new(), urcode: 0 }, why };
    };
    let urcode_path = urcode_file();
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
        limit,
    })
    .await;
    let written =
        std::fs::read_to_string(&urcode_path).ok().and_then(|t| t.trim().parse::<i64>().ok());
    let _ = std::fs::remove_file(&urcode_path);
    let reply =
        |default: i64| Reply { body: outcome.stdout.clone(), urcode: written.unwrap_or(default) };
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
        other => Called::Failure {
            reply: reply(-1),
            why: format!("service {service}: {}", other.describe()),
        },
    }
}
