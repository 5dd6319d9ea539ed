//! Running qm under a cluster manager: the OCF resource agent `dist/ocf/qm` driven as
//! Pacemaker drives it (an action as its argument, `OCF_RESKEY_*` parameters, OCF exit
//! codes) against real daemons, and the systemd units of `dist/systemd`.
//!
//! The agent runs without ocf-shellfuncs (`OCF_ROOT` names nothing), as on a machine
//! without resource-agents installed.

use crate::auto::{App, KillMarked, eventually, running, setup, sleep_marker};
use crate::support::{Daemon, Env, QMADMIN, QMD, Run, run_limited, wait_until};
use crate::users::User;
use qm_common::protocol::DaemonStatus;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/ocf/qm");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/systemd");

// Exit codes of the OCF standard.
const OCF_SUCCESS: i32 = 0;
const OCF_ERR_GENERIC: i32 = 1;
const OCF_ERR_UNIMPLEMENTED: i32 = 3;
const OCF_ERR_INSTALLED: i32 = 5;
const OCF_ERR_CONFIGURED: i32 = 6;
const OCF_NOT_RUNNING: i32 = 7;

/// One resource: the agent with its parameters.
struct Agent {
    vars: Vec<(String, String)>,
}

impl Agent {
    /// A resource for `device`, with the workspace's qmd and qmadmin.
    fn new(device: &Path) -> Agent {
        Agent::bare().with("device", device.to_str().expect("UTF-8 path"))
    }

    /// The programs only: no device.
    fn bare() -> Agent {
        Agent { vars: Vec::new() }.with("qmd", QMD).with("qmadmin", QMADMIN)
    }

    /// Sets parameter `name` (`OCF_RESKEY_name`), or a variable of its own when `name`
    /// already starts with `OCF_`.
    fn with(mut self, name: &str, value: &str) -> Agent {
        let var = match name.starts_with("OCF_") {
            true => name.to_string(),
            false => format!("OCF_RESKEY_{name}"),
        };
        self.vars.retain(|(v, _)| *v != var);
        self.vars.push((var, value.to_string()));
        self
    }

    /// Runs `action`; the agent never takes a minute.
    fn run(&self, action: &str) -> Run {
        let mut cmd = Command::new(AGENT);
        cmd.arg(action)
            .env("OCF_ROOT", "/nonexistent/ocf")
            .env_remove("OCF_FUNCTIONS_DIR")
            .env("OCF_RESOURCE_INSTANCE", "qm-test")
            .env_remove("QMCONFIG")
            .env_remove("QM_SOCKET")
            .env_remove("QM_CONNECT")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .current_dir("/");
        run_limited(cmd, Duration::from_secs(60))
    }

    /// Runs `action` and checks its exit code, showing what the agent said otherwise.
    #[track_caller]
    fn expect(&self, action: &str, code: i32) -> Run {
        let run = self.run(action);
        assert_eq!(
            run.status, code,
            "{action}: expected exit code {code}\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        );
        run
    }
}

/// The daemon's pid, from `daemon status` (which never starts one).
#[track_caller]
fn daemon_pid(env: &Env) -> u32 {
    let mut cmd = env.qmadmin_cmd();
    cmd.arg("--no-start").arg("--json").arg("-c").arg("daemon status");
    env.run_stdin(cmd, "").ok().json::<DaemonStatus>().pid
}

fn lock_path(device: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", device.display()))
}

/// Whether nobody holds the device's lock: util-linux flock takes it at once.
fn lock_free(device: &Path) -> bool {
    let mut cmd = Command::new("flock");
    cmd.arg("--nonblock").arg("--exclusive").arg(lock_path(device)).arg("true");
    run_limited(cmd, Duration::from_secs(10)).status == 0
}

/// What the lock file says: `generation G pid P`.
#[track_caller]
fn holder(device: &Path) -> (u64, u32) {
    let text = std::fs::read_to_string(lock_path(device)).unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[..] {
        ["generation", g, "pid", p] => (g.parse().unwrap(), p.parse().unwrap()),
        _ => panic!("the lock file says {text:?}, not 'generation G pid P'"),
    }
}

/// Whether process `pid` is gone: no such process, or a zombie nobody reaped yet (a
/// detached qmd's parent is whoever adopts orphans, which may not reap them in a
/// container).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.get(stat.rfind(')').map_or(0, |i| i + 2)..).is_some_and(|s| s.starts_with('Z'))
        }
    }
}

fn kill(sig: &str, pid: u32) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{sig} {pid} failed");
}

/// Kills a qmd the agent started when the test ends, however it ends: a daemon that was
/// paused, or left by a failing test, is not stopped by `daemon stop`.
/// The agent of `env`'s device after a successful start, the pid of the qmd it started,
/// and a guard that kills that qmd if the test ends without stopping it.
fn started(env: &Env) -> (Agent, u32, KillOnDrop) {
    let agent = Agent::new(&env.device);
    agent.expect("start", OCF_SUCCESS);
    let pid = daemon_pid(env);
    (agent, pid, KillOnDrop(pid))
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.0)).unwrap_or_default();
        if comm.trim() == "qmd" && !gone(self.0) {
            let _ = Command::new("kill").arg("-KILL").arg(self.0.to_string()).status();
        }
    }
}

/// A start tag: the element's name and its attributes.
type Tag = (String, Vec<(String, String)>);

/// The start tags of an XML document, each with its attributes, once the document is
/// found well-formed: one declaration first, one root element, tags closed in order,
/// attributes quoted and not repeated, `<` only in markup, `&` only in entities.
fn xml_start_tags(text: &str) -> Result<Vec<Tag>, String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-_:.".contains(c);
    let text = text.trim_start();
    let mut rest = text.strip_prefix("<?xml ").ok_or("no XML declaration")?;
    rest = &rest[rest.find("?>").ok_or("unclosed declaration")? + 2..];
    let mut open: Vec<String> = Vec::new();
    let mut tags = Vec::new();
    let mut roots = 0;
    loop {
        let lt = rest.find('<').unwrap_or(rest.len());
        let chars = &rest[..lt];
        if open.is_empty() && !chars.trim().is_empty() {
            return Err(format!("text outside the root element: {chars:?}"));
        }
        for (i, _) in chars.match_indices('&') {
            let entity = &chars[i..chars[i..].find(';').map_or(chars.len(), |e| i + e + 1)];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity) {
                return Err(format!("bare & in {chars:?}"));
            }
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->").ok_or("unclosed comment")? + 3..];
            continue;
        }
        if rest.starts_with("<!DOCTYPE") {
            if roots > 0 {
                return Err("DOCTYPE after the root element".into());
            }
            rest = &rest[rest.find('>').ok_or("unclosed DOCTYPE")? + 1..];
            continue;
        }
        let gt = rest.find('>').ok_or("unclosed tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(top) if top == name.trim_end() => continue,
                top => return Err(format!("</{name}> closes {top:?}")),
            }
        }
        let (tag, empty) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let name_len = tag.find(|c: char| !name_char(c)).unwrap_or(tag.len());
        let (name, mut attrs_text) = tag.split_at(name_len);
        if name.is_empty() || tag.contains('<') {
            return Err(format!("bad tag <{tag}>"));
        }
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            attrs_text = attrs_text.trim_start();
            if attrs_text.is_empty() {
                break;
            }
            let eq = attrs_text.find('=').ok_or(format!("attribute without value in <{tag}>"))?;
            let key = attrs_text[..eq].trim_end();
            if key.is_empty() || !key.chars().all(name_char) {
                return Err(format!("bad attribute name {key:?} in <{tag}>"));
            }
            let value = attrs_text[eq + 1..].trim_start();
            let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'');
            let quote = quote.ok_or(format!("unquoted attribute {key} in <{tag}>"))?;
            let end = value[1..].find(quote).ok_or(format!("unclosed value of {key}"))?;
            if attrs.iter().any(|(k, _)| k == key) {
                return Err(format!("attribute {key} twice in <{tag}>"));
            }
            attrs.push((key.to_string(), value[1..=end].to_string()));
            attrs_text = &value[end + 2..];
        }
        if open.is_empty() {
            roots += 1;
            if roots > 1 {
                return Err(format!("a second root element <{name}>"));
            }
        }
        if !empty {
            open.push(name.to_string());
        }
        tags.push((name.to_string(), attrs));
    }
    match (roots, open.last()) {
        (1, None) => Ok(tags),
        (_, Some(name)) => Err(format!("<{name}> is never closed")),
        _ => Err("no root element".into()),
    }
}

/// The check above refuses what it should.
#[test]
fn the_xml_check_finds_mistakes() {
    let good = "<?xml version=\"1.0\"?>\n<!DOCTYPE a SYSTEM \"a.dtd\">\n<a x=\"1\"><b y='2'/>&amp;<!-- c --></a>\n";
    let tags = xml_start_tags(good).unwrap();
    assert_eq!(tags[1], ("b".to_string(), vec![("y".to_string(), "2".to_string())]));
    for bad in [
        "<a></a>",
        "<?xml version=\"1.0\"?><a><b></a></b>",
        "<?xml version=\"1.0\"?><a x=1></a>",
        "<?xml version=\"1.0\"?><a x=\"1\" x=\"2\"></a>",
        "<?xml version=\"1.0\"?><a>&</a>",
        "<?xml version=\"1.0\"?><a></a><b></b>",
        "<?xml version=\"1.0\"?><a>",
        "<?xml version=\"1.0\"?>text<a></a>",
    ] {
        assert!(xml_start_tags(bad).is_err(), "{bad} passed");
    }
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `meta-data` needs no parameter and prints OCF 1.1 meta-data: well-formed XML naming
/// every parameter (the device required, fence_on_start a boolean on by default) and every
/// action with a time-out. The agent is executable, as an OCF agent must be.
#[test]
fn meta_data_is_well_formed_and_names_every_parameter() {
    let mode = std::fs::metadata(AGENT).expect("dist/ocf/qm").permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "dist/ocf/qm is not executable (mode {mode:o})");
    let run = Agent { vars: Vec::new() }.expect("meta-data", OCF_SUCCESS);
    let tags = xml_start_tags(&run.stdout)
        .unwrap_or_else(|e| panic!("meta-data is not well-formed XML: {e}\n{}", run.stdout));
    assert_eq!(tags[0].0, "resource-agent");
    assert_eq!(attr(&tags[0].1, "name"), Some("qm"));
    assert!(run.stdout.contains("<version>1.1</version>"), "{}", run.stdout);
    let named = |element: &str| -> Vec<Tag> {
        tags.iter()
            .filter(|(name, _)| name == element)
            .map(|(_, attrs)| (attr(attrs, "name").unwrap_or_default().to_string(), attrs.clone()))
            .collect()
    };
    let parameters = named("parameter");
    let names: Vec<&str> = parameters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["device", "qmd", "qmadmin", "options", "user", "socket", "fence_on_start"],
        "{}",
        run.stdout
    );
    assert_eq!(attr(&parameters[0].1, "required"), Some("1"), "the device is required");
    // Every parameter has its descriptions and content, in the order the schema wants.
    let order: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
    let described =
        order.windows(4).filter(|w| *w == ["parameter", "longdesc", "shortdesc", "content"]);
    assert_eq!(described.count(), parameters.len(), "{}", run.stdout);
    let contents: Vec<_> = tags.iter().filter(|(n, _)| n == "content").map(|(_, a)| a).collect();
    let fence = contents.last().expect("contents");
    assert_eq!((attr(fence, "type"), attr(fence, "default")), (Some("boolean"), Some("true")));
    let actions = named("action");
    for action in ["start", "stop", "monitor", "meta-data", "validate-all"] {
        let found = actions.iter().find(|(n, _)| n == action);
        let timeout = found.and_then(|(_, attrs)| attr(attrs, "timeout"));
        assert!(timeout.is_some_and(|t| t.ends_with('s')), "action {action}: {}", run.stdout);
    }
    Agent { vars: Vec::new() }.expect("no-such-action", OCF_ERR_UNIMPLEMENTED);
}

/// validate-all: no device, a relative one or a bad boolean is a configuration error (6,
/// not worth trying on another node); a missing directory or program is this node's
/// problem (5). With OCF_CHECK_LEVEL=0 only the parameters are checked.
#[test]
fn validate_all_checks_parameters_and_this_node() {
    let env = Env::new();
    let good = Agent::new(&env.device);
    good.expect("validate-all", OCF_SUCCESS);
    Agent::bare()
        .expect("validate-all", OCF_ERR_CONFIGURED)
        .stderr_has("ocf-exit-reason:the device parameter is required");
    Agent::bare().expect("monitor", OCF_ERR_CONFIGURED);
    Agent::bare().with("device", "QUE").expect("validate-all", OCF_ERR_CONFIGURED);
    Agent::new(&env.device)
        .with("fence_on_start", "maybe")
        .expect("validate-all", OCF_ERR_CONFIGURED);
    Agent::new(&env.device)
        .with("options", "-s --detach")
        .expect("validate-all", OCF_ERR_CONFIGURED);
    Agent::new(&env.device)
        .with("options", "--end-orphans")
        .expect("validate-all", OCF_ERR_CONFIGURED)
        .stderr_has("options must not hold --detach, --standby, --fence, --verify, --end-orphans");

    let elsewhere = env.path("not-mounted/QUE");
    Agent::new(&elsewhere)
        .expect("validate-all", OCF_ERR_INSTALLED)
        .stderr_has(&format!("{} does not exist", env.path("not-mounted").display()));
    Agent::new(&elsewhere).with("OCF_CHECK_LEVEL", "0").expect("validate-all", OCF_SUCCESS);
    // A probe on a node where the device's filesystem is not mounted: not running here.
    Agent::new(&elsewhere).expect("monitor", OCF_NOT_RUNNING);
    Agent::new(&env.device)
        .with("qmd", "/nonexistent/qmd")
        .expect("validate-all", OCF_ERR_INSTALLED)
        .stderr_has("qmd program '/nonexistent/qmd' not found");
    Agent::new(&env.device).with("qmadmin", "no-such-qmadmin").expect("start", OCF_ERR_INSTALLED);
    assert!(!lock_path(&env.device).exists(), "nothing was started");
}

/// The life of a resource: not running before start; start serves the device (qmadmin
/// works on it) and is idempotent; reload re-reads the configuration; stop lets go of
/// the device (lock released, socket gone) and is idempotent too.
#[test]
fn start_monitor_stop() {
    let env = Env::new();
    let agent = Agent::new(&env.device);
    agent.expect("monitor", OCF_NOT_RUNNING);
    agent.expect("stop", OCF_SUCCESS);
    agent.expect("start", OCF_SUCCESS).stderr_has("serving");
    let pid = daemon_pid(&env);
    let _guard = KillOnDrop(pid);
    agent.expect("monitor", OCF_SUCCESS);
    env.c_no_start(&format!("crdl {} 0 2000", env.dev())).ok();
    env.c_no_start("lidl").ok().stdout_has(&env.dev());
    agent.expect("start", OCF_SUCCESS).stderr_has("already serves");
    assert_eq!(daemon_pid(&env), pid, "a second start started nothing");
    agent.expect("reload", OCF_SUCCESS);
    assert!(!lock_free(&env.device), "a serving qmd holds the lock");

    agent.expect("stop", OCF_SUCCESS);
    agent.expect("monitor", OCF_NOT_RUNNING);
    assert!(lock_free(&env.device), "the lock is released");
    assert!(!env.socket().exists(), "the socket is removed");
    assert!(wait_until(Duration::from_secs(10), || gone(pid)), "qmd {pid} still runs");
    agent.expect("stop", OCF_SUCCESS);
    agent.expect("reload", OCF_NOT_RUNNING);
    env.c_no_start("lidl").failed();
}

/// A qmd killed outright lets go of its lock with its life: monitor says not running
/// (not failed), stop has nothing to do, and start serves the device again as it was.
#[test]
fn a_killed_qmd_is_not_running() {
    let env = Env::new();
    let (agent, pid, _guard) = started(&env);
    env.c_no_start(&format!("crdl {} 0 2000", env.dev())).ok();
    kill("KILL", pid);
    let stopped =
        wait_until(Duration::from_secs(10), || agent.run("monitor").status == OCF_NOT_RUNNING);
    assert!(stopped, "monitor still says {:?}", agent.run("monitor"));
    assert!(lock_free(&env.device));
    agent.expect("stop", OCF_SUCCESS);
    agent.expect("start", OCF_SUCCESS);
    let again = daemon_pid(&env);
    let _guard = KillOnDrop(again);
    assert_ne!(again, pid);
    env.c_no_start("lidl").ok().stdout_has(&env.dev());
    agent.expect("stop", OCF_SUCCESS);
}

/// A qmd that holds the device but does not answer (paused here with SIGSTOP) is a failure
/// for monitor, found within the operation's time-out; stop ends it by signal, within its
/// own time-out, using the pid the lock file names.
#[test]
fn an_unresponsive_qmd_fails_monitor_and_is_killed_by_stop() {
    let env = Env::new();
    let (agent, pid, _guard) = started(&env);
    assert_eq!(holder(&env.device).1, pid, "the lock file names the daemon");
    kill("STOP", pid);

    let began = Instant::now();
    let agent = agent.with("CRM_meta_timeout", "3000");
    agent
        .expect("monitor", OCF_ERR_GENERIC)
        .stderr_has(&format!("ocf-exit-reason:a qmd (pid {pid}) holds"));
    assert!(began.elapsed() < Duration::from_secs(3), "monitor took {:?}", began.elapsed());

    let began = Instant::now();
    let agent = agent.with("CRM_meta_timeout", "6000");
    agent.expect("stop", OCF_SUCCESS).stderr_has(&format!("sending SIGKILL to qmd pid {pid}"));
    assert!(began.elapsed() < Duration::from_secs(6), "stop took {:?}", began.elapsed());
    assert!(gone(pid), "qmd {pid} still runs");
    assert!(lock_free(&env.device));
    agent.expect("monitor", OCF_NOT_RUNNING);
}

/// A qmd that stop had to kill leaves its threshold commands and workers running (nobody
/// ends their process groups); stop ends them, since the next qmd, which would, may start
/// on another node. Here a threshold command that hangs.
#[test]
fn stop_ends_what_a_killed_qmd_left_running() {
    let env = Env::new();
    let (agent, pid, _guard) = started(&env);
    let marker = sleep_marker(1000, 27);
    let _cleanup = KillMarked(marker.clone());
    setup(&env, 200, &[&format!("Q fifo none 0 0 1m 0m '{marker}; true'")]);
    let mut app = App::connect(&env);
    app.put("Q", b"x");
    eventually("the threshold command runs", || running(&marker));
    drop(app);
    kill("STOP", pid);

    let agent = agent.with("CRM_meta_timeout", "6000");
    let stop = agent.expect("stop", OCF_SUCCESS);
    stop.stderr_has(&format!("sending SIGKILL to qmd pid {pid}"));
    stop.stderr_has(&format!(
        "ended 1 threshold command(s) (queues QS/Q) left by a killed qmd of {}",
        env.device.display()
    ));
    assert!(gone(pid), "qmd {pid} still runs");
    assert!(!running(&marker), "the threshold command outlived the stop");
    // A stop with nothing running has nothing left to end.
    agent.expect("stop", OCF_SUCCESS).stderr_has("no process of a killed qmd");
}

/// Runs `qmd DEVICE` in a pid namespace of its own: to the agent it is a qmd on another
/// node sharing the device's filesystem, holding the lock under a pid that is nobody here.
/// Needs unshare(1) and the right to make namespaces (root): without them the test fails,
/// saying so.
fn qmd_on_another_node(device: &Path) -> Daemon {
    let mut probe = Command::new("unshare");
    probe.args(["--pid", "--fork", "true"]);
    let probe = run_limited(probe, Duration::from_secs(10));
    assert_eq!(
        probe.status, 0,
        "this test runs a qmd in a pid namespace of its own and needs unshare(1) (util-linux) \
         with the right to create one (root, CAP_SYS_ADMIN): {}",
        probe.stderr
    );
    let mut cmd = Command::new("unshare");
    // No setsid: qmd's process group lies outside the namespace, where it reads as 0 (qmd
    // once panicked on that). --kill-child: the daemon ends with unshare, when the test
    // drops it.
    cmd.args(["--pid", "--fork", "--kill-child", QMD]).arg(device).env_remove("QM_SOCKET");
    Daemon::start_command(cmd, device)
}

/// Taking the device over from a qmd elsewhere: while it holds the lock, monitor says not
/// running here; start fences the device (the other qmd stops before its next write, and
/// lets go of the lock), then serves. Every qmd that serves raises the generation, and
/// start raises it once more unless fence_on_start is false.
#[test]
fn start_fences_a_qmd_elsewhere_and_takes_over() {
    let env = Env::new();
    let mut other = qmd_on_another_node(&env.device);
    let (generation, _) = holder(&env.device);
    assert!(!lock_free(&env.device));
    let agent = Agent::new(&env.device);
    agent.expect("monitor", OCF_NOT_RUNNING);
    agent.expect("stop", OCF_SUCCESS).stderr_has("no qmd serves");
    assert!(!lock_free(&env.device), "stop left the other node's qmd alone");

    agent.expect("start", OCF_SUCCESS);
    let ended = other.wait();
    assert_ne!(ended.status, 0, "the fenced qmd stopped as fenced\n{}", ended.stderr);
    assert!(ended.stderr.to_lowercase().contains("fenced"), "{}", ended.stderr);
    let ours = daemon_pid(&env);
    let _guard = KillOnDrop(ours);
    assert_eq!(holder(&env.device), (generation + 2, ours), "fenced, then served");
    agent.expect("monitor", OCF_SUCCESS);

    agent.expect("stop", OCF_SUCCESS);
    let unfenced = Agent::new(&env.device).with("fence_on_start", "false");
    unfenced.expect("start", OCF_SUCCESS).stderr_lacks("fenced");
    let next = daemon_pid(&env);
    let _guard = KillOnDrop(next);
    assert_eq!(holder(&env.device), (generation + 3, next), "served without fencing");
    unfenced.expect("stop", OCF_SUCCESS);
}

/// With `user`, the agent (root) runs qmd as that user, and the qmadmin commands that
/// reach it (root's qmadmin would refuse another user's daemon), and `qmd --fence` too:
/// the lock file stays the user's, so that the user's next qmd may take it.
#[test]
fn user_runs_qmd_as_that_user() {
    let user = User::create();
    let env = Env::new();
    let device = user.own_dir(&env).join("QUE");
    let agent = Agent::new(&device).with("user", &user.name);
    agent.expect("validate-all", OCF_SUCCESS);
    agent.expect("monitor", OCF_NOT_RUNNING);
    for round in 0..2 {
        agent.expect("start", OCF_SUCCESS);
        let status = user.qmadmin(&device, &["--no-start", "--json"], "daemon status");
        let pid = status.ok().json::<DaemonStatus>().pid;
        let _guard = KillOnDrop(pid);
        let owner = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
        assert_eq!(owner, user.uid, "round {round}: qmd runs as {owner}");
        assert_eq!(std::fs::metadata(lock_path(&device)).unwrap().uid(), user.uid);
        agent.expect("monitor", OCF_SUCCESS);
        agent.expect("stop", OCF_SUCCESS);
        agent.expect("monitor", OCF_NOT_RUNNING);
    }
    Agent::new(&device)
        .with("user", "qm-no-such-user")
        .expect("start", OCF_ERR_INSTALLED)
        .stderr_has("user qm-no-such-user does not exist");
}

/// The systemd units run qmd with options it has: each unit's ExecStart is qmd, and every
/// long option there appears in `qmd --help`. Each reads /etc/qm/INSTANCE.env, runs as qm
/// in the foreground and is restarted when it fails.
#[test]
fn systemd_units_use_options_qmd_has() {
    let mut cmd = Command::new(QMD);
    cmd.arg("--help");
    let help = run_limited(cmd, Duration::from_secs(30)).ok().stdout.clone();
    let mut units: Vec<PathBuf> = std::fs::read_dir(UNITS)
        .expect("dist/systemd")
        .map(|e| e.expect("dist/systemd entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    let names: Vec<String> =
        units.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["qmd-standby@.service", "qmd@.service"]);
    for unit in &units {
        let text = std::fs::read_to_string(unit).unwrap();
        let name = unit.display();
        let settings: Vec<&str> =
            text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
        let exec: Vec<&str> =
            settings.iter().filter_map(|l| l.strip_prefix("ExecStart=")).collect();
        assert_eq!(exec.len(), 1, "{name}: one ExecStart");
        let mut words = exec[0].split_whitespace();
        // systemd's prefixes (-, @, :, +, !) come before the program.
        let program = words.next().unwrap().trim_start_matches(['-', '@', ':', '+', '!']);
        assert_eq!(Path::new(program).file_name().unwrap(), "qmd", "{name}: {}", exec[0]);
        for word in words {
            if let Some(var) = word.strip_prefix('$') {
                assert_eq!(var, "QMD_OPTIONS", "{name}: {word}");
            } else if word.starts_with("--") {
                let option = word.split('=').next().unwrap();
                let listed =
                    [" ", "\n", "="].iter().any(|end| help.contains(&format!("{option}{end}")));
                assert!(listed, "{name}: qmd --help lists no {option}\n{help}");
                assert_ne!(option, "--detach", "{name}: systemd runs qmd in the foreground");
            } else {
                panic!("{name}: unexpected {word:?} in ExecStart (options go in QMD_OPTIONS)");
            }
        }
        for setting in [
            "EnvironmentFile=/etc/qm/%i.env",
            "User=qm",
            "Group=qm",
            "Restart=on-failure",
            "KillSignal=SIGTERM",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectSystem=strict",
        ] {
            assert!(settings.contains(&setting), "{name} lacks {setting}");
        }
        assert!(settings.iter().any(|l| l.starts_with("TimeoutStopSec=")), "{name}");
    }
}
