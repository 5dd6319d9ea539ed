//! The daemon's shared state: the device it serves, what is loaded, and the sessions.
//!
//! The device path is fixed for the daemon's life, but the file behind it is not: scripts
//! remove the device and create a new one. Before every admin request (and every second in
//! the background) the daemon checks that the path still names the file it opened; if not,
//! it lets go of everything and starts over with whatever the path names now.
//!
//! The store's lock is held for short steps only. Work that takes long (initializing a
//! queue space's extents) marks its queue space as busy in the store and runs without the
//! lock, so that other queue spaces, greetings and signals never wait for it.

use crate::admin::{extents_of, qspace_file_name, queue::queue_defs};
use crate::engine::{Engine, Limits};
use crate::forwarder::Forwarders;
use crate::registry::Registry;
use crate::storage::Device;
use crate::storage::records::now_secs;
use crate::threshold::CommandEnv;
use qm_common::config::Config;
use qm_common::{QmError, QmResult};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// A queue space loaded in the daemon: its in-memory state lives here until `ipcrm`, a
/// command that needs it inactive, or a restart.
pub struct LoadedSpace {
    pub since: u64,
    pub engine: Arc<Engine>,
}

/// The device and everything that depends on it.
pub struct Store {
    /// `None` while no device file exists at the path.
    pub device: Option<Device>,
    /// Bumped whenever the device is let go; attachments of older generations are void.
    pub generation: u64,
    pub loaded: BTreeMap<String, LoadedSpace>,
    /// Why the file at the path could not be opened, if it could not.
    pub open_error: Option<String>,
    /// Time-out of transactions that do not set their own.
    pub txn_timeout: Duration,
    /// Where threshold commands run, for the engines loaded.
    pub commands: Arc<CommandEnv>,
    /// Queue spaces whose extents are being initialized (outside the lock), with the
    /// generation of the device they are on.
    pub initializing: BTreeMap<String, u64>,
    /// Raised whenever the device is let go or another is opened: the rights read from it
    /// are no longer the device's (see [`crate::rights::Policy`]).
    pub grants_stale: Arc<std::sync::atomic::AtomicBool>,
}

impl Store {
    /// Lets go of the device and everything loaded from it.
    pub fn release(&mut self) {
        for (_, space) in std::mem::take(&mut self.loaded) {
            space.engine.kill();
        }
        self.device = None;
        self.generation += 1;
        self.grants_stale.store(true, Ordering::Release);
    }

    /// Drops a queue space's in-memory state; true if it was loaded.
    pub fn unload(&mut self, name: &str) -> bool {
        match self.loaded.remove(name) {
            Some(space) => {
                space.engine.kill();
                true
            }
            None => false,
        }
    }

    /// Refuses work on a queue space whose extents are being initialized.
    pub fn check_not_initializing(&self, name: &str) -> QmResult<()> {
        if self.initializing.get(name) == Some(&self.generation) {
            return Err(QmError::in_use(format!(
                "Queue space {name} is being initialized; try again once its initialization \
                 (qspacecreate or qspacechange with Initialize extents: y) has finished"
            )));
        }
        Ok(())
    }

    /// Destroys the queues of loaded queue spaces whose empty idle expiration has passed,
    /// each checked again under its queue space's lock as it goes.
    pub fn expire_idle_queues(&mut self) {
        let now = crate::storage::records::now_secs();
        for (qspace, space) in &self.loaded {
            for queue in space.engine.idle_expired(now) {
                match space.engine.remove_idle_queue(&queue, now) {
                    Ok(true) => tracing::info!(
                        %qspace, %queue, "queue destroyed: empty and idle past its idle expiration"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        %qspace, %queue, "idle queue not destroyed: {}", e.message
                    ),
                }
            }
        }
    }

    /// The engine of a loaded queue space.
    pub fn engine(&self, name: &str) -> Option<Arc<Engine>> {
        self.loaded.get(name).map(|s| s.engine.clone())
    }

    /// Makes sure the store serves the file the device path names right now.
    pub fn refresh(&mut self, path: &std::path::Path) {
        if let Some(device) = &self.device {
            if device.is_current() {
                return;
            }
            tracing::warn!(device = %path.display(), "device file was removed or replaced; releasing it");
            self.release();
        }
        self.open_error = None;
        if path.exists() {
            match Device::open(path) {
                Ok(device) => {
                    tracing::info!(device = %path.display(), "device opened");
                    self.device = Some(device);
                    self.grants_stale.store(true, Ordering::Release);
                }
                Err(e) => self.open_error = Some(e.message),
            }
        }
    }

    /// Loads a queue space's in-memory state (its engine) if it is not loaded yet.
    pub fn load(&mut self, name: &str) -> QmResult<Arc<Engine>> {
        if let Some(engine) = self.engine(name) {
            return Ok(engine);
        }
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| QmError::not_found("Device list not initialized"))?;
        let record = device
            .qspace(name)?
            .ok_or_else(|| QmError::not_found(format!("Queue space {name} does not exist")))?;
        let p = &record.params;
        let pages: u64 = extents_of(&device.vtoc()?, name).iter().map(|t| t.pages).sum();
        let (db, writer) = device.file(&qspace_file_name(device, name)?)?;
        let limits = Limits {
            page_size: device.page_size(),
            usable_blocks: pages.saturating_sub(1 + u64::from(p.queues)),
            messages: u64::from(p.messages),
            np_bytes: p.nonpersistent.bytes(device.page_size()),
            transactions: p.transactions as usize,
            waiters: p.processes + p.actions,
            error_queue: p.error_queue.clone(),
            txn_timeout: self.txn_timeout,
            total_pages: pages,
            commands: self.commands.clone(),
        };
        let engine = Engine::load(name, db, writer, queue_defs(device, name)?, limits)?;
        self.loaded
            .insert(name.to_string(), LoadedSpace { since: now_secs(), engine: engine.clone() });
        Ok(engine)
    }
}

/// Everything the daemon's tasks share.
pub struct Daemon {
    pub device_path: PathBuf,
    pub socket_path: PathBuf,
    pub started: u64,
    store: Mutex<Store>,
    pub sessions: Registry,
    shutdown: watch::Sender<bool>,
    /// What threshold commands and services are told about the daemon.
    pub command_env: Arc<CommandEnv>,
    pub forwarders: Arc<Forwarders>,
    /// The configuration file in use, if any.
    config_path: Mutex<Option<PathBuf>>,
    /// How long a client may take to finish a frame it has begun, in milliseconds.
    frame_limit_ms: AtomicU64,
    /// Who may do what (the grants of the device, the owner and root).
    pub rights: crate::rights::Policy,
    /// The control socket lets other users connect (`--socket-mode` with group or other
    /// bits): they are served as `unix:<name>`, and their rights decide.
    socket_shared: std::sync::atomic::AtomicBool,
    /// Network connections open, for `-t`.
    pub network_quiet: Arc<crate::net::Quiet>,
    /// Where the network face listens, when it is open.
    pub network: std::sync::OnceLock<String>,
    /// The network face's TLS settings, when it speaks TLS.
    pub tls: std::sync::OnceLock<Arc<crate::tls::TlsFace>>,
    /// How sessions are served (`-s`, `-m`, `-r`); defaults until set at start.
    net_policy: std::sync::OnceLock<crate::net::NetPolicy>,
}

impl Daemon {
    pub fn new(device_path: PathBuf, socket_path: PathBuf) -> Daemon {
        let command_env = Arc::new(CommandEnv::new(
            device_path.clone(),
            socket_path.clone(),
            qm_common::config::COMMAND_TIMEOUT,
        ));
        let rights = crate::rights::Policy::new();
        let mut store = Store {
            grants_stale: rights.stale_flag(),
            device: None,
            generation: 1,
            loaded: BTreeMap::new(),
            open_error: None,
            txn_timeout: Duration::from_secs(30),
            commands: command_env.clone(),
            initializing: BTreeMap::new(),
        };
        store.refresh(&device_path);
        Daemon {
            device_path,
            socket_path,
            started: now_secs(),
            store: Mutex::new(store),
            sessions: Registry::default(),
            shutdown: watch::channel(false).0,
            command_env,
            forwarders: Arc::default(),
            config_path: Mutex::new(None),
            frame_limit_ms: AtomicU64::new(crate::server::FRAME_LIMIT.as_millis() as u64),
            rights,
            socket_shared: std::sync::atomic::AtomicBool::new(false),
            network_quiet: Arc::default(),
            network: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            net_policy: std::sync::OnceLock::new(),
        }
    }

    /// Lets users other than the owner and root connect to the control socket (its mode
    /// lets them).
    pub fn set_socket_shared(&self, shared: bool) {
        self.socket_shared.store(shared, Ordering::Relaxed);
    }

    pub fn socket_shared(&self) -> bool {
        self.socket_shared.load(Ordering::Relaxed)
    }

    /// Uses `path` as the configuration file (or none).
    pub fn set_config_path(&self, path: Option<PathBuf>) {
        *self.config_path.lock().unwrap_or_else(|p| p.into_inner()) = path;
    }

    /// The configuration file, for messages.
    /// The directory of the configuration file in use, if any.
    pub fn config_dir(&self) -> Option<PathBuf> {
        let path = self.config_path.lock().unwrap_or_else(|p| p.into_inner()).clone();
        path.and_then(|p| p.parent().map(std::path::Path::to_path_buf))
    }

    pub fn config_path_text(&self) -> String {
        match &*self.config_path.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(p) => p.display().to_string(),
            None => format!(
                "no configuration file; {} is read when present",
                qm_common::paths::config_path(&self.device_path).display()
            ),
        }
    }

    /// Reads the configuration file (if any) and applies it; on an error (including a file
    /// that is not ours or that others may write) nothing changes.
    pub fn reload(&self) -> QmResult<Config> {
        let path = {
            let mut path = self.config_path.lock().unwrap_or_else(|p| p.into_inner());
            // DEVICE.toml created since the start is read from now on.
            let default = qm_common::paths::config_path(&self.device_path);
            if path.is_none() && default.exists() {
                *path = Some(default);
            } else if path.as_ref() == Some(&default) && !default.exists() {
                // DEVICE.toml is read when present: removing it means no configuration.
                *path = None;
            }
            path.clone()
        };
        let config = match &path {
            Some(p) => {
                // It names commands qmd runs: only a file nobody else may change is read.
                let text =
                    qm_common::trust::read_trusted(p, "configuration").map_err(QmError::inval)?;
                Config::parse(&text)
                    .map_err(|e| QmError::inval(format!("{}: {}", p.display(), e.message)))?
            }
            None => Config::default(),
        };
        let cwd = self.command_env.cwd();
        for (name, service) in &config.services {
            qm_common::trust::check_command_files(&service.command, cwd.as_deref())
                .map_err(|why| QmError::inval(format!("service {name}: {why}")))?;
        }
        // New certificates for new connections; those made keep theirs.
        if let Some(tls) = self.tls.get() {
            tls.reload().map_err(|e| QmError::inval(format!("TLS not reloaded: {e}")))?;
        }
        self.command_env.set_timeout(config.thresholds.command_timeout);
        self.forwarders.configure(&config);
        Ok(config)
    }

    /// Sets the time-out of transactions that do not set their own.
    pub fn set_txn_timeout(&self, timeout: Duration) {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).txn_timeout = timeout;
    }

    /// Sets how long a client may take to finish a frame it has begun.
    pub fn set_frame_limit(&self, limit: Duration) {
        self.frame_limit_ms.store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// Sets how sessions are served; once, at start.
    pub fn set_net_policy(&self, policy: crate::net::NetPolicy) {
        let _ = self.net_policy.set(policy);
    }

    pub fn net_policy(&self) -> crate::net::NetPolicy {
        self.net_policy.get().copied().unwrap_or_default()
    }

    pub fn frame_limit(&self) -> Duration {
        Duration::from_millis(self.frame_limit_ms.load(Ordering::Relaxed))
    }

    /// The store, refreshed against the device path.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.refresh(&self.device_path);
        store
    }

    /// Checks the device path now unless someone holds the store (who checks it anyway):
    /// the periodic check never waits behind other work.
    pub fn refresh_if_idle(&self) {
        let mut store = match self.store.try_lock() {
            Ok(store) => store,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        store.refresh(&self.device_path);
        store.expire_idle_queues();
    }

    /// The queue each of `names` names in queue space `qspace` (itself, or the queue it is
    /// an alias of), from the loaded engine or else the stored definitions.
    pub fn canonical_queues(&self, qspace: &str, names: &[String]) -> Vec<Option<String>> {
        let store = self.store();
        if let Some(engine) = store.engine(qspace) {
            return names.iter().map(|n| engine.canonical(n)).collect();
        }
        let defs = store
            .device
            .as_ref()
            .and_then(|d| crate::admin::queue::queue_defs(d, qspace).ok())
            .unwrap_or_default();
        names
            .iter()
            .map(|n| defs.iter().find(|d| d.answers_to(n)).map(|d| d.name.clone()))
            .collect()
    }

    /// Why the daemon cannot serve its device right now, if it cannot.
    pub fn startup_problem(&self) -> Option<String> {
        self.store().open_error.clone()
    }

    /// Attaches a session to a queue space, loading it if needed; refuses past the queue
    /// space's number of processes.
    pub fn attach(&self, store: &mut Store, session: u64, name: &str) -> QmResult<Arc<Engine>> {
        qm_common::names::check_qspace_name(name)?;
        store.check_not_initializing(name)?;
        let device = store.device.as_ref().ok_or_else(|| {
            QmError::not_found(format!(
                "Device list not initialized on {}",
                self.device_path.display()
            ))
        })?;
        let record = device
            .qspace(name)?
            .ok_or_else(|| QmError::not_found(format!("Queue space {name} does not exist")))?;
        let others = self.sessions.attached(name, store.generation, Some(session));
        let limit = record.params.processes as usize;
        if others.len() >= limit {
            return Err(QmError::no_space(format!(
                "Queue space {name} has {} attached, its limit (qspacechange can raise it): {}",
                qm_common::plural::count(others.len() as u64, "process", "processes"),
                crate::registry::describe_all(&others)
            )));
        }
        let engine = store.load(name)?;
        let open = crate::registry::OpenSpace {
            name: name.to_string(),
            generation: store.generation,
            since: now_secs(),
        };
        self.sessions.set_open(session, Some(open));
        Ok(engine)
    }

    /// Closes the device and every file it has open (a clean stop), so that the next start
    /// opens them without a repair. Loaded queue spaces are let go first.
    pub fn close_storage(&self) {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        for (_, space) in std::mem::take(&mut store.loaded) {
            // The threshold commands still running end with the daemon: say so on disk
            // before the files close.
            let marked = space.engine.mark_running(qm_common::protocol::FIRING_CUT_SHORT);
            if let Some(Err(e)) = marked.map(|m| m.wait_blocking()) {
                tracing::warn!("cannot record the threshold commands cut short: {}", e.message);
            }
            space.engine.kill();
        }
        if let Some(device) = store.device.take() {
            device.close();
        }
    }

    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// True once the daemon was asked to stop: long work gives up at its next step.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}
