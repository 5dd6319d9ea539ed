//! The daemon's TOML configuration: forwarders (TMQFORWARD) and the services they call.
//!
//! ```toml
//! [thresholds]
//! command_timeout = 60          # seconds a threshold command may run
//!
//! [[forwarder]]
//! id = 1002
//! qspace = "QSPACE"
//! clopt = "-- -i 2 -q service1 -e"   # Tuxedo's spelling, or the fields below
//! # queues = ["service1"]
//! # transaction_timeout = 60    # -t
//! # idle = 30                   # -i: seconds; 0 polls continuously; negative: milliseconds
//! # exit_when_empty = false     # -e
//! # delete_on_failure = false   # -d
//! boot = false                  # start with the daemon
//!
//! [service.service1]
//! command = "/usr/app/bin/service1"   # body on stdin, reply on stdout, exit 0 = success
//!
//! [service.service2]                 # started once, called over docs/worker-protocol.md
//! command = "/usr/app/bin/worker2"
//! mode = "worker"                     # default "exec": one process per message
//! min = 1                             # workers kept running (0 to 64)
//! max = 4                             # most at once (1 to 64, at least min)
//! max_requests = 10000                # replaced after this many requests (default: never)
//! timeout = 30                        # seconds per request (default: the forwarder's -t)
//!
//! [listen]                      # the network face, read at start (qmd's options win)
//! address = "*"                 # -i
//! port = 53000                  # -p; without it, the first free port from 53000
//! max_connections = 1024        # -n
//! idle_timeout = 600            # -t
//! persistent = true             # -s
//! connection_file = "conn.json" # -c; relative paths are relative to this file
//! cert_key = "server.pem"       # -k
//! ca_chains = ["ca/*.pem"]      # -a
//! ```

use crate::error::{QmError, QmResult};
use crate::names::{check_qspace_name, check_queue_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Defaults of TMQFORWARD.
pub const FORWARDER_TXN_TIMEOUT: u32 = 60;
pub const FORWARDER_IDLE: i64 = 30;
/// Default time limit of a threshold command, in seconds.
pub const COMMAND_TIMEOUT: u64 = 60;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub thresholds: ThresholdConfig,
    #[serde(default, rename = "forwarder")]
    pub forwarders: Vec<ForwarderEntry>,
    #[serde(default, rename = "service")]
    pub services: BTreeMap<String, ServiceDef>,
    /// The network face, as qmd's options would give it.
    #[serde(default)]
    pub listen: Option<ListenConfig>,
}

/// The `[listen]` table: qmd's network options in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub address: Option<String>,
    pub port: Option<u16>,
    pub max_connections: Option<u32>,
    pub idle_timeout: Option<u32>,
    #[serde(default)]
    pub persistent: bool,
    pub connection_file: Option<std::path::PathBuf>,
    pub cert_key: Option<std::path::PathBuf>,
    #[serde(default)]
    pub ca_chains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Seconds a threshold command may run before it is killed.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: u64,
}

fn default_command_timeout() -> u64 {
    COMMAND_TIMEOUT
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig { command_timeout: COMMAND_TIMEOUT }
    }
}

/// A forwarder as written in the file: fields, or Tuxedo's `clopt`, or both (fields win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderEntry {
    pub id: u32,
    pub qspace: String,
    #[serde(default)]
    pub clopt: Option<String>,
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    #[serde(default)]
    pub transaction_timeout: Option<u32>,
    #[serde(default)]
    pub idle: Option<i64>,
    #[serde(default)]
    pub exit_when_empty: Option<bool>,
    #[serde(default)]
    pub delete_on_failure: Option<bool>,
    #[serde(default)]
    pub boot: bool,
}

/// A service: the command a forwarder calls for each message of the queue named like it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    pub command: String,
    /// How the command is called.
    #[serde(default)]
    pub mode: ServiceMode,
    /// Workers kept running (worker mode).
    #[serde(default)]
    pub min: Option<u32>,
    /// Most workers running at once (worker mode).
    #[serde(default)]
    pub max: Option<u32>,
    /// Requests a worker serves before it is replaced (worker mode; none: no limit).
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Seconds one request may take (worker mode; none: the forwarder's `-t`).
    #[serde(default)]
    pub timeout: Option<u32>,
}

/// How a service's command is called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Started once per message: body on stdin, reply on stdout, exit status.
    #[default]
    Exec,
    /// Started once and sent every message over the worker protocol.
    Worker,
}

/// Defaults and limits of worker services.
pub const WORKERS_MIN: u32 = 1;
pub const WORKERS_MAX: u32 = 4;
pub const WORKERS_LIMIT: u32 = 64;
pub const WORKER_TIMEOUT_LIMIT: u32 = 86_400;

/// A worker service's settings, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    pub min: u32,
    pub max: u32,
    pub max_requests: Option<u64>,
    pub timeout: Option<std::time::Duration>,
}

impl ServiceDef {
    /// The settings of a worker service (defaults filled in); `None` in exec mode.
    pub fn workers(&self) -> Option<WorkerSettings> {
        (self.mode == ServiceMode::Worker).then(|| {
            let min = self.min.unwrap_or(WORKERS_MIN);
            WorkerSettings {
                min,
                max: self.max.unwrap_or(WORKERS_MAX.max(min)),
                max_requests: self.max_requests,
                timeout: self.timeout.map(|s| std::time::Duration::from_secs(u64::from(s))),
            }
        })
    }

    /// Checks the fields of service `name`, naming the one at fault and what is allowed.
    pub fn check(&self, name: &str) -> QmResult<()> {
        let field = |f: &str| format!("service {name}: {f}");
        if self.command.trim().is_empty() {
            return Err(QmError::inval(format!("service {name} has an empty command")));
        }
        if self.mode == ServiceMode::Exec {
            let worker_only = [
                ("min", self.min.is_some()),
                ("max", self.max.is_some()),
                ("max_requests", self.max_requests.is_some()),
                ("timeout", self.timeout.is_some()),
            ];
            if let Some((f, _)) = worker_only.iter().find(|(_, set)| *set) {
                return Err(QmError::inval(format!(
                    "{}: applies to mode = \"worker\" only; an exec service (the default mode) \
                     starts its command for each message, within its forwarder's -t",
                    field(f)
                )));
            }
            return Ok(());
        }
        let settings = self.workers().expect("worker mode");
        if settings.min > WORKERS_LIMIT {
            return Err(QmError::invalid(
                &field("min"),
                settings.min,
                &format!("it must be 0 to {WORKERS_LIMIT}"),
            ));
        }
        if settings.max == 0 || settings.max > WORKERS_LIMIT {
            return Err(QmError::invalid(
                &field("max"),
                settings.max,
                &format!("it must be 1 to {WORKERS_LIMIT}"),
            ));
        }
        if settings.max < settings.min {
            return Err(QmError::invalid(
                &field("max"),
                settings.max,
                &format!("it must be at least min ({}) and at most {WORKERS_LIMIT}", settings.min),
            ));
        }
        if self.max_requests == Some(0) {
            return Err(QmError::invalid(
                &field("max_requests"),
                0,
                "it must be 1 or more (leave it out for no limit)",
            ));
        }
        if let Some(t) = self.timeout
            && (t == 0 || t > WORKER_TIMEOUT_LIMIT)
        {
            return Err(QmError::invalid(
                &field("timeout"),
                t,
                &format!(
                    "it must be 1 to {WORKER_TIMEOUT_LIMIT} seconds (leave it out for the \
                     forwarder's -t)"
                ),
            ));
        }
        Ok(())
    }
}

/// A forwarder with every option resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwarderDef {
    pub id: u32,
    pub qspace: String,
    pub queues: Vec<String>,
    /// `-t`, seconds.
    pub transaction_timeout: u32,
    /// `-i`: seconds; 0 polls continuously; negative: milliseconds.
    pub idle: i64,
    /// `-e`.
    pub exit_when_empty: bool,
    /// `-d`.
    pub delete_on_failure: bool,
    pub boot: bool,
}

impl ForwarderDef {
    /// How long to wait when every queue is empty.
    pub fn idle_duration(&self) -> std::time::Duration {
        match self.idle {
            n if n < 0 => std::time::Duration::from_millis(n.unsigned_abs()),
            n => std::time::Duration::from_secs(n as u64),
        }
    }
}

/// Options parsed from a TMQFORWARD `CLOPT` string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clopt {
    pub queues: Option<Vec<String>>,
    pub transaction_timeout: Option<u32>,
    pub idle: Option<i64>,
    pub exit_when_empty: bool,
    pub delete_on_failure: bool,
}

/// Parses `"[servopts] -- -q q1,q2 [-t secs] [-i idle] [-e] [-d] [-b n]"`; only the part
/// after `--` matters to a forwarder. `-n` and `-f` are refused: qm does not support them.
pub fn parse_clopt(text: &str) -> QmResult<Clopt> {
    let bad = |why: &str| QmError::invalid("clopt", text, why);
    let words: Vec<&str> = text.split_whitespace().collect();
    let start = words.iter().position(|w| *w == "--").map_or(0, |i| i + 1);
    let mut clopt = Clopt::default();
    let mut it = words[start..].iter();
    while let Some(word) = it.next() {
        let mut value =
            |flag: &str| it.next().copied().ok_or_else(|| bad(&format!("{flag} needs a value")));
        match *word {
            "-q" => {
                let list = value("-q")?;
                if clopt.queues.is_some() {
                    return Err(bad(
                        "-q is given more than once; list every queue in one -q q1,q2",
                    ));
                }
                clopt.queues = Some(list.split(',').map(str::to_string).collect());
            }
            "-t" => {
                clopt.transaction_timeout =
                    Some(value("-t")?.parse().map_err(|_| bad("-t takes whole seconds"))?)
            }
            "-i" => {
                clopt.idle = Some(
                    value("-i")?
                        .parse()
                        .map_err(|_| bad("-i takes a whole number (negative: milliseconds)"))?,
                )
            }
            "-e" => clopt.exit_when_empty = true,
            "-d" => clopt.delete_on_failure = true,
            // TMQFORWARD options that would change what a forwarder does: refused rather
            // than silently ignored.
            "-n" | "-f" => {
                return Err(bad(&format!(
                    "{word} is not supported by qm; each message is forwarded in its own \
                     transaction (use -q, -t, -i, -e, -d or -b)"
                )));
            }
            // Accepted for compatibility (a batch size); qm takes one message per transaction.
            "-b" => {
                value(word)?;
            }
            other => {
                return Err(bad(&format!("unknown option {other}; use -q, -t, -i, -e, -d or -b")));
            }
        }
    }
    Ok(clopt)
}

impl ForwarderEntry {
    /// Resolves the entry against its `clopt` and the defaults, and checks it.
    pub fn resolve(&self) -> QmResult<ForwarderDef> {
        let which = format!("forwarder {}", self.id);
        if self.id == 0 {
            return Err(QmError::invalid("forwarder id", self.id, "it must be 1 to 4294967295"));
        }
        let clopt = match &self.clopt {
            Some(c) => {
                parse_clopt(c).map_err(|e| QmError::inval(format!("{which}: {}", e.message)))?
            }
            None => Clopt::default(),
        };
        let def = ForwarderDef {
            id: self.id,
            qspace: self.qspace.clone(),
            queues: self.queues.clone().or(clopt.queues).unwrap_or_default(),
            transaction_timeout: self
                .transaction_timeout
                .or(clopt.transaction_timeout)
                .unwrap_or(FORWARDER_TXN_TIMEOUT),
            idle: self.idle.or(clopt.idle).unwrap_or(FORWARDER_IDLE),
            exit_when_empty: self.exit_when_empty.unwrap_or(clopt.exit_when_empty),
            delete_on_failure: self.delete_on_failure.unwrap_or(clopt.delete_on_failure),
            boot: self.boot,
        };
        check_qspace_name(&def.qspace)
            .map_err(|e| QmError::inval(format!("{which}: {}", e.message)))?;
        if def.queues.is_empty() {
            return Err(QmError::inval(format!(
                "{which}: no queues; give queues = [...] or -q in clopt"
            )));
        }
        for (i, q) in def.queues.iter().enumerate() {
            check_queue_name(q).map_err(|e| QmError::inval(format!("{which}: {}", e.message)))?;
            if def.queues[..i].contains(q) {
                return Err(QmError::inval(format!(
                    "{which}: queue {q} is listed twice in its queues; list each queue once"
                )));
            }
        }
        if def.transaction_timeout == 0 || def.transaction_timeout > 86_400 {
            return Err(QmError::invalid(
                &format!("{which}: transaction_timeout"),
                def.transaction_timeout,
                "it must be 1 to 86400 seconds",
            ));
        }
        if def.idle.abs() > 86_400_000 {
            return Err(QmError::invalid(
                &format!("{which}: idle"),
                def.idle,
                "it must be within a day",
            ));
        }
        Ok(def)
    }
}

impl Config {
    /// Parses and checks a configuration file's text.
    pub fn parse(text: &str) -> QmResult<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| QmError::inval(format!("configuration: {e}")))?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &config.forwarders {
            if !seen.insert(f.id) {
                return Err(QmError::inval(format!(
                    "configuration: forwarder {} is defined twice",
                    f.id
                )));
            }
        }
        for f in &config.forwarders {
            let def = f.resolve()?;
            for q in &def.queues {
                if !config.services.contains_key(q) {
                    return Err(QmError::inval(format!(
                        "configuration: forwarder {} serves queue {q} but no service {q} is \
                         defined; add a [service.{q}] table with its command",
                        f.id
                    )));
                }
            }
        }
        for (name, s) in &config.services {
            s.check(name).map_err(|e| QmError::inval(format!("configuration: {}", e.message)))?;
        }
        if config.thresholds.command_timeout == 0 {
            return Err(QmError::inval(
                "configuration: thresholds.command_timeout must be at least 1 second",
            ));
        }
        Ok(config)
    }

    /// Every forwarder, resolved.
    pub fn forwarder_defs(&self) -> Vec<ForwarderDef> {
        self.forwarders.iter().filter_map(|f| f.resolve().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopt_spelling() {
        let c = parse_clopt("-A -- -i 2 -q STRING,OTHER -e -t 10").unwrap();
        assert_eq!(c.queues, Some(vec!["STRING".to_string(), "OTHER".to_string()]));
        assert_eq!((c.idle, c.transaction_timeout, c.exit_when_empty), (Some(2), Some(10), true));
        assert!(parse_clopt("-- -x").is_err());
        assert!(parse_clopt("-- -q").is_err());
        assert_eq!(parse_clopt("-- -i -10 -q Q").unwrap().idle, Some(-10));
    }

    #[test]
    fn config_file() {
        let c = Config::parse(
            "[[forwarder]]\nid = 1002\nqspace = \"QS\"\nclopt = \"-- -q service1 -e\"\nidle = 0\n\n[service.service1]\ncommand = \"cat\"\n",
        )
        .unwrap();
        let def = &c.forwarder_defs()[0];
        assert_eq!(def.queues, ["service1"]);
        assert!(def.exit_when_empty && !def.delete_on_failure);
        assert_eq!((def.idle, def.transaction_timeout), (0, 60));
        assert!(
            Config::parse("[[forwarder]]\nid = 1\nqspace = \"QS\"\n")
                .unwrap_err()
                .message
                .contains("no queues")
        );
        assert!(Config::parse("bogus = 1\n").is_err());
    }

    #[test]
    fn worker_services() {
        let parse = |extra: &str| {
            Config::parse(&format!("[service.S]\ncommand = \"w\"\nmode = \"worker\"\n{extra}"))
        };
        let defaults = parse("").unwrap().services["S"].workers().unwrap();
        assert_eq!((defaults.min, defaults.max, defaults.max_requests), (1, 4, None));
        assert_eq!(parse("min = 9").unwrap().services["S"].workers().unwrap().max, 9);
        let exec = Config::parse("[service.S]\ncommand = \"cat\"\n").unwrap();
        assert_eq!(exec.services["S"].workers(), None);
        for (extra, field) in [
            ("max = 0", "max"),
            ("min = 3\nmax = 2", "max"),
            ("min = 65", "min"),
            ("max_requests = 0", "max_requests"),
            ("timeout = 0", "timeout"),
        ] {
            let e = parse(extra).unwrap_err().message;
            assert!(e.starts_with(&format!("configuration: service S: {field}: ")), "{e}");
        }
        let e = Config::parse("[service.S]\ncommand = \"cat\"\ntimeout = 5\n").unwrap_err();
        assert!(e.message.contains("timeout: applies to mode = \"worker\" only"), "{}", e.message);
    }
}
