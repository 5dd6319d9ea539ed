//! Where a daemon's files live, derived from the device path so that every program agrees.
//!
//! For a device `/app/qm/QUE`:
//! - control socket `/app/qm/QUE.sock` (`--socket` or `QM_SOCKET` override it); when that
//!   path is too long for a Unix socket, `<hash>.sock` in a private directory of the user
//!   ([`private_dir`]);
//! - lock `/app/qm/QUE.lock`, held while a daemon serves the device;
//! - log `/app/qm/QUE.log`, for daemons started in the background;
//! - configuration `/app/qm/QUE.toml`, read at start when present.

use crate::trust;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Environment variable naming the device, as in Tuxedo.
pub const QMCONFIG_ENV: &str = "QMCONFIG";
/// Environment variable overriding the control socket path.
pub const SOCKET_ENV: &str = "QM_SOCKET";

/// Longest socket path we bind, in bytes: `sun_path` holds 108 bytes including the NUL.
pub const SOCKET_PATH_MAX: usize = 107;

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

/// The default control socket of a device: next to it when the path fits in a Unix socket
/// address (counted in bytes), else in the user's [`private_dir`].
pub fn socket_path(device: &Path) -> PathBuf {
    let path = with_suffix(device, ".sock");
    if path.as_os_str().len() <= SOCKET_PATH_MAX {
        return path;
    }
    let hash = fnv1a(device.as_os_str().as_encoded_bytes());
    private_dir().join(format!("{hash:016x}.sock"))
}

/// The user's private directory for qm's runtime files: sockets whose natural path is too
/// long, and the files services write their return codes to. It is
/// `$XDG_RUNTIME_DIR/qm` when that variable names a directory of ours that no one else may
/// write, else `/tmp/qm-<uid>`. Only its owner may use it: another user who could create
/// files there could listen in our place or feed us a return code. See
/// [`ensure_private_dir`].
pub fn private_dir() -> PathBuf {
    match runtime_dir() {
        Some(dir) => dir.join("qm"),
        None => PathBuf::from(format!("/tmp/qm-{}", trust::euid())),
    }
}

/// The [`private_dir`], created (mode 0700) if it does not exist; refused when it is not
/// ours alone.
pub fn ensure_private_dir() -> Result<PathBuf, String> {
    let dir = private_dir();
    trust::ensure_private_dir(
        &dir,
        "runtime files (sockets of long device paths, services' return codes)",
    )?;
    Ok(dir)
}

/// `$XDG_RUNTIME_DIR` when it is ours: a real directory (not a link) of our user that nobody
/// else may write. Someone else's (say, after `sudo`) is not used.
fn runtime_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty())?);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let ours = meta.is_dir() && meta.uid() == trust::euid() && meta.mode() & 0o022 == 0;
    (dir.is_absolute() && ours).then_some(dir)
}

/// Before a socket in the [`private_dir`] is bound or connected to: creates the directory
/// if it does not exist, and refuses it when it is not ours alone. Other sockets need
/// nothing here.
pub fn prepare_socket_dir(socket: &Path) -> Result<(), String> {
    if socket.parent() == Some(private_dir().as_path()) {
        ensure_private_dir()?;
    }
    Ok(())
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
        assert_eq!(s.parent(), Some(private_dir().as_path()));
        assert_eq!(s, socket_path(&long));
    }

    /// The limit counts bytes: 'é' is two of them.
    #[test]
    fn socket_length_counts_bytes() {
        // 102 bytes in 52 characters: its socket path is 107 bytes long.
        let fits = PathBuf::from(format!("/x{}", "é".repeat(50)));
        assert_eq!(socket_path(&fits).as_os_str().len(), SOCKET_PATH_MAX);
        assert_eq!(socket_path(&fits).parent(), Some(Path::new("/")));
        let over = PathBuf::from(format!("{}x", fits.display()));
        assert_eq!(socket_path(&over).parent(), Some(private_dir().as_path()));
    }
}
