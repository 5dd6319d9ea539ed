//! Finding queue managers: the profile (seed 004's "finding a queue manager for an
//! application").
//!
//! A profile is a TOML file naming queue managers, each reached at a device (its daemon's
//! control socket) or at network addresses (an active daemon and its standby), with a
//! priority:
//!
//! ```toml
//! [manager.east]
//! address = "tls+tcp://east.example:53000, tls+tcp://east-standby.example:53000"
//! priority = 10
//!
//! [manager.local]
//! device = "/srv/qm/QUE"
//! ```
//!
//! Two profiles are read: the user's (`$XDG_CONFIG_HOME/qm/profile.toml`, by default
//! `~/.config/qm/profile.toml`) and the host's (`/etc/qm/profile.toml`). A name is looked
//! up in that order, so the user's entry hides the host's of the same name. Which managers
//! an application uses when it names none: the one `QM_MANAGER` names (a manager of the
//! profiles, an address list or a device path), else every manager of both profiles, the
//! reachable one of highest priority first (ties: the user's first, then in file order).

use crate::address::Address;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Names the manager applications use when they name none.
pub const MANAGER_ENV: &str = "QM_MANAGER";
/// The host's profile.
pub const HOST_PROFILE: &str = "/etc/qm/profile.toml";
/// Reads the host's profile from another path (packaging, tests).
pub const HOST_PROFILE_ENV: &str = "QM_HOST_PROFILE";

/// Where a manager's entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `QM_MANAGER` itself named an address or a device.
    Environment,
    User,
    Host,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Environment => "QM_MANAGER",
            Source::User => "user",
            Source::Host => "host",
        })
    }
}

/// Where a manager is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A device on this machine: its daemon's control socket.
    Device { device: PathBuf, socket: Option<PathBuf> },
    /// Network addresses (or `unix:` sockets), tried in order.
    Addresses(Vec<Address>),
}

/// One queue manager of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub name: String,
    pub place: Place,
    pub priority: i64,
    pub source: Source,
}

impl Manager {
    /// The addresses to try, in order.
    pub fn addresses(&self) -> Vec<Address> {
        match &self.place {
            Place::Device { device, socket } => {
                vec![Address::Unix(crate::paths::resolve_socket(device, socket.as_deref()))]
            }
            Place::Addresses(list) => list.clone(),
        }
    }

    /// Where it is, as a user wrote it.
    pub fn place_text(&self) -> String {
        match &self.place {
            Place::Device { device, .. } => device.display().to_string(),
            Place::Addresses(list) => {
                list.iter().map(Address::to_string).collect::<Vec<_>>().join(", ")
            }
        }
    }
}

/// One manager as a profile file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    device: Option<PathBuf>,
    socket: Option<PathBuf>,
    address: Option<String>,
    #[serde(default)]
    priority: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    manager: BTreeMap<String, Entry>,
}

/// The managers of the profiles, and the one `QM_MANAGER` chose.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The user's, then the host's not hidden by them.
    managers: Vec<Manager>,
    /// What `QM_MANAGER` chose, if it is set.
    chosen: Option<Manager>,
    /// The files read, for messages.
    pub files: Vec<PathBuf>,
}

/// The user's profile path.
pub fn user_profile() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".config"))
        })?;
    Some(config.join("qm").join("profile.toml"))
}

/// The host's profile path.
pub fn host_profile() -> PathBuf {
    std::env::var_os(HOST_PROFILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(HOST_PROFILE))
}

impl Profile {
    /// Reads the user's and the host's profiles (either may be missing) and `QM_MANAGER`.
    pub fn load() -> Result<Profile, String> {
        let manager = std::env::var(MANAGER_ENV).ok().filter(|v| !v.trim().is_empty());
        Profile::from_files(user_profile().as_deref(), Some(&host_profile()), manager.as_deref())
    }

    /// Reads the given profiles (a missing file is an empty profile) with `manager` as
    /// `QM_MANAGER` would say it.
    pub fn from_files(
        user: Option<&Path>,
        host: Option<&Path>,
        manager: Option<&str>,
    ) -> Result<Profile, String> {
        let mut profile = Profile::default();
        for (path, source) in [(user, Source::User), (host, Source::Host)] {
            let Some(path) = path else { continue };
            if !path.exists() {
                continue;
            }
            let text = crate::trust::read_trusted(path, "profile")?;
            for m in parse(&text, path, source)? {
                if profile.find(&m.name).is_none() {
                    profile.managers.push(m);
                }
            }
            profile.files.push(path.to_path_buf());
        }
        if let Some(text) = manager {
            profile.chosen = Some(profile.choose(text.trim())?);
        }
        Ok(profile)
    }

    /// What `QM_MANAGER` says: a manager's name, else an address list or a device path.
    fn choose(&self, text: &str) -> Result<Manager, String> {
        if let Some(m) = self.find(text) {
            return Ok(m.clone());
        }
        let place = if text.starts_with('/') {
            Place::Device { device: PathBuf::from(text), socket: None }
        } else if text.contains("://") || text.starts_with("unix:") {
            Place::Addresses(Address::parse_list(text).map_err(|e| format!("{MANAGER_ENV}: {e}"))?)
        } else {
            return Err(format!(
                "{MANAGER_ENV}={text}: no profile names a manager so ({}); give a manager's \
                 name, an address list or a device's absolute path",
                self.read_text()
            ));
        };
        Ok(Manager { name: text.to_string(), place, priority: 0, source: Source::Environment })
    }

    /// Which profiles were read, for messages.
    pub fn read_text(&self) -> String {
        match self.files.is_empty() {
            true => "no profile was found".to_string(),
            false => {
                let files: Vec<String> =
                    self.files.iter().map(|f| f.display().to_string()).collect();
                format!("read {}", files.join(" and "))
            }
        }
    }

    /// The manager of this name: the user's, else the host's.
    pub fn find(&self, name: &str) -> Option<&Manager> {
        self.managers.iter().find(|m| m.name == name)
    }

    /// Every manager of the profiles, in lookup order (the user's, then the host's).
    pub fn managers(&self) -> &[Manager] {
        &self.managers
    }

    /// What `QM_MANAGER` chose, if it is set.
    pub fn chosen(&self) -> Option<&Manager> {
        self.chosen.as_ref()
    }

    /// The managers an application that names none uses, in the order to try them: the one
    /// `QM_MANAGER` chose, else all by priority (highest first; ties in lookup order).
    pub fn candidates(&self) -> Vec<&Manager> {
        if let Some(m) = &self.chosen {
            return vec![m];
        }
        let mut list: Vec<&Manager> = self.managers.iter().collect();
        // Stable: equal priorities keep the lookup order.
        list.sort_by_key(|m| std::cmp::Reverse(m.priority));
        list
    }
}

/// Reads one profile file's managers.
fn parse(text: &str, path: &Path, source: Source) -> Result<Vec<Manager>, String> {
    let shown = path.display();
    let file: File = toml::from_str(text).map_err(|e| format!("profile {shown}: {e}"))?;
    let mut managers = Vec::new();
    for (name, entry) in file.manager {
        let bad = |why: String| format!("profile {shown}, [manager.{name}]: {why}");
        crate::names::check_manager(&name).map_err(bad)?;
        let place = match (entry.device, entry.address) {
            (Some(device), None) if device.is_absolute() => {
                Place::Device { device, socket: entry.socket }
            }
            (Some(device), None) => {
                return Err(bad(format!("device {} must be an absolute path", device.display())));
            }
            (None, Some(address)) if entry.socket.is_none() => {
                Place::Addresses(Address::parse_list(&address).map_err(bad)?)
            }
            (None, Some(_)) => return Err(bad("socket goes with device, not address".into())),
            _ => return Err(bad("give either device or address".into())),
        };
        managers.push(Manager { name, place, priority: entry.priority, source: source.clone() });
    }
    Ok(managers)
}

/// A queue named in full: `[MANAGER/]QSPACE/QUEUE`. The first part is a manager when a
/// profile names one so and at least two parts follow; the queue may contain `/` (an
/// alias such as `cf/hotline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullName {
    pub manager: Option<String>,
    pub qspace: String,
    pub queue: String,
}

impl FullName {
    pub fn parse(text: &str, profile: &Profile) -> Result<FullName, String> {
        let parts: Vec<&str> = text.splitn(3, '/').collect();
        let named = |m: Option<&str>, qspace: &str, queue: &str| FullName {
            manager: m.map(str::to_string),
            qspace: qspace.to_string(),
            queue: queue.to_string(),
        };
        let full = match parts.as_slice() {
            [m, qs, q] if profile.find(m).is_some() => named(Some(m), qs, q),
            [qs, rest @ ..] if !rest.is_empty() => named(None, qs, &rest.join("/")),
            _ => {
                return Err(format!(
                    "queue name '{}' needs a queue space: QSPACE/QUEUE or MANAGER/QSPACE/QUEUE",
                    crate::error::shown(text)
                ));
            }
        };
        if full.qspace.is_empty() || full.queue.is_empty() {
            return Err(format!(
                "queue name '{}' has an empty part: QSPACE/QUEUE or MANAGER/QSPACE/QUEUE",
                crate::error::shown(text)
            ));
        }
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn lookup_order_and_priorities() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(
            dir.path(),
            "user.toml",
            "[manager.east]\naddress = \"tcp://e:1, tcp://e2:1\"\npriority = 5\n\
             [manager.mine]\ndevice = \"/d/QUE\"\n",
        );
        let host = write(
            dir.path(),
            "host.toml",
            "[manager.east]\ndevice = \"/hidden\"\npriority = 99\n\
             [manager.west]\naddress = \"tcp://w:1\"\npriority = 5\n",
        );
        let p = Profile::from_files(Some(&user), Some(&host), None).unwrap();
        let east = p.find("east").unwrap();
        assert_eq!(east.source, Source::User);
        assert_eq!(east.addresses().len(), 2);
        let order: Vec<&str> = p.candidates().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["east", "west", "mine"]);
        let chosen = Profile::from_files(Some(&user), Some(&host), Some("west")).unwrap();
        assert_eq!(chosen.candidates()[0].name, "west");
        assert_eq!(chosen.candidates().len(), 1);
        let direct = Profile::from_files(None, None, Some("tcp://x:2")).unwrap();
        assert_eq!(direct.candidates()[0].source, Source::Environment);
        assert!(Profile::from_files(None, None, Some("nobody")).is_err());
        assert!(Profile::from_files(None, Some(&dir.path().join("none")), None).is_ok());
    }

    #[test]
    fn bad_entries_name_the_manager() {
        let dir = tempfile::tempdir().unwrap();
        for (text, says) in [
            ("[manager.a]\n", "either device or address"),
            ("[manager.a]\ndevice = \"rel\"\n", "absolute"),
            ("[manager.a]\naddress = \"ftp://x\"\n", "[manager.a]"),
            ("[manager.a]\ndevice = \"/d\"\ncolour = 1\n", "colour"),
            ("[manager.\"a/b\"]\ndevice = \"/d\"\n", "manager.a/b"),
        ] {
            let path = write(dir.path(), "p.toml", text);
            let e = Profile::from_files(Some(&path), None, None).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn full_names() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(dir.path(), "u.toml", "[manager.east]\ndevice = \"/d\"\n");
        let p = Profile::from_files(Some(&user), None, None).unwrap();
        let f = FullName::parse("east/QS/cf/hotline", &p).unwrap();
        assert_eq!(
            (f.manager.as_deref(), f.qspace.as_str(), f.queue.as_str()),
            (Some("east"), "QS", "cf/hotline")
        );
        let f = FullName::parse("QS/cf/hotline", &p).unwrap();
        assert_eq!((f.manager, f.qspace.as_str(), f.queue.as_str()), (None, "QS", "cf/hotline"));
        assert!(FullName::parse("Q", &p).is_err());
        assert!(FullName::parse("QS/", &p).is_err());
    }
}
