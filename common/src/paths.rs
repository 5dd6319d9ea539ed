//! Where a daemon's files live, derived from the device path so that every program agrees.
//!
//! For a device `/app/qm/QUE`:
//! - control socket `/app/qm/QUE.sock` (`--socket` or `QM_SOCKET` override it; when the
//!   path would be too long for a Unix socket, `/tmp/qm-<uid>-<hash>.sock` is used);
//! - lock `/app/qm/QUE.lock`, held while a daemon serves the device;
//! - log `/app/qm/QUE.log`, for daemons started in the background;
//! - configuration `/app/qm/QUE.toml`, read at start when present.

use std::path::{Path, PathBuf};

/// Environment variable naming the device, as in Tuxedo.
pub const QMCONFIG_ENV: &str = "QMCONFIG";
/// Environment variable overriding the control socket path.
pub const SOCKET_ENV: &str = "QM_SOCKET";

/// Longest socket path we bind: `sun_path` holds 108 bytes including the NUL.
const SOCKET_PATH_MAX: usize = 100;

fn with_suffix(device: &Path, suffix: &str) -> PathBuf {
    let mut s = device.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// FNV-1a: stable across builds, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// The default control socket of a device.
pub fn socket_path(device: &Path) -> PathBuf {
    let path = with_suffix(device, ".sock");
    if path.as_os_str().len() <= SOCKET_PATH_MAX {
        return path;
    }
    let uid = rustix_free_uid();
    let hash = fnv1a(device.as_os_str().as_encoded_bytes());
    PathBuf::from(format!("/tmp/qm-{uid}-{hash:016x}.sock"))
}

/// The socket to use: an explicit choice, else `QM_SOCKET`, else the device default.
pub fn resolve_socket(device: &Path, explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(SOCKET_ENV) {
        Some(s) if !s.is_empty() => PathBuf::from(s),
        _ => socket_path(device),
    }
}

/// The lock file held by the daemon serving a device.
pub fn lock_path(device: &Path) -> PathBuf {
    with_suffix(device, ".lock")
}

/// The log of a daemon started in the background.
pub fn log_path(device: &Path) -> PathBuf {
    with_suffix(device, ".log")
}

/// The configuration file read when `--config` is not given.
pub fn config_path(device: &Path) -> PathBuf {
    with_suffix(device, ".toml")
}

/// Makes a device path absolute against the current directory, without touching the disk.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
}

fn rustix_free_uid() -> u32 {
    // The owner of /proc/self is our real uid; good enough to keep users' sockets apart.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_paths() {
        let d = Path::new("/app/qm/QUE");
        assert_eq!(socket_path(d), PathBuf::from("/app/qm/QUE.sock"));
        assert_eq!(lock_path(d), PathBuf::from("/app/qm/QUE.lock"));
        assert_eq!(config_path(d), PathBuf::from("/app/qm/QUE.toml"));
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        let s = socket_path(&long);
        assert!(s.to_str().unwrap().starts_with("/tmp/qm-"));
        assert_eq!(s, socket_path(&long));
    }
}
