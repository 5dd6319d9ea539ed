//! Whom and what qm trusts: the daemon a client talks to, the files the daemon acts on, and
//! the directories its files live in.
//!
//! The rule is ssh's `StrictModes`: a daemon, a configuration or a private directory counts
//! only when it belongs to us (our effective user) or to root, and a file whose contents
//! qm acts on must not be writable by anyone else. Files at predictable paths next to a
//! device (lock, log) are opened without following symbolic links, so that nobody who may
//! write the directory can aim them at another file. Every check is made on what was
//! opened (its descriptor), not on a second look at the path.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Our effective user id: the one files and peers are compared with.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// True for users whose daemons and files we accept: ourselves and root.
pub fn is_trusted_user(uid: u32) -> bool {
    uid == euid() || uid == 0
}

/// The login name of `uid`, when the system knows it.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: all-zero bytes are a valid `passwd` (null pointers, zero ids).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the pointers are valid for the call and `buf.len()` is the buffer's size; the
    // name read below points into `buf`, which outlives its use.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// A user for messages: `uid 1001 (alice)`, or `uid 1001` when the name is unknown.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The users [`is_trusted_user`] accepts, for messages: `uid 1001 (alice) or root`, or just
/// `uid 0 (root)` when we are root.
pub fn trusted_users() -> String {
    match euid() {
        0 => describe_user(0),
        me => format!("{} or root", describe_user(me)),
    }
}

/// Permission bits as `ls -l` users write them in octal: `0644`, `1777`.
pub fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Who besides the owner may write, according to `mode`; `None` when nobody may.
fn other_writers(mode: u32) -> Option<&'static str> {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("its group and all other users"),
        (true, false) => Some("its group"),
        (false, true) => Some("all other users"),
        (false, false) => None,
    }
}

/// Why a listener running as `uid` (neither us nor root) is not the rightful one of
/// `socket`, if it is not. It is when `uid` owns the directory the socket is in and nobody
/// else may write that directory, nor any above it except with the sticky bit (which stops
/// them from moving what is not theirs): then only `uid` or root could have bound a socket
/// there. This is how one user reaches another's daemon whose socket was shared with
/// `qmd --socket-mode`, without trusting whoever got to a world-writable place first.
pub fn listener_dir_problem(socket: &Path, uid: u32) -> Option<String> {
    let parent = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let dir = match std::fs::canonicalize(&parent) {
        Ok(d) => d,
        Err(e) => {
            return Some(format!("its directory {} cannot be inspected ({e})", parent.display()));
        }
    };
    let mut first = true;
    for d in dir.ancestors() {
        let meta = match std::fs::metadata(d) {
            Ok(m) => m,
            Err(e) => return Some(format!("directory {} cannot be inspected ({e})", d.display())),
        };
        let (owner, mode) = (meta.uid(), meta.mode());
        let which = if first { "the socket's directory" } else { "the directory" };
        if first && owner != uid {
            return Some(format!(
                "{which} {} belongs to {}, not to the daemon's user",
                d.display(),
                describe_user(owner)
            ));
        }
        if !first && owner != uid && owner != 0 {
            return Some(format!(
                "{which} {} above it belongs to {}, who could replace what is below",
                d.display(),
                describe_user(owner)
            ));
        }
        let sticky_ok = !first && mode & 0o1000 != 0;
        if let Some(writers) = other_writers(mode).filter(|_| !sticky_ok) {
            return Some(format!(
                "{which} {} (mode {}) may be written by {writers}, who could have bound the \
                 socket first",
                d.display(),
                mode_text(mode)
            ));
        }
        first = false;
    }
    None
}

/// Opens a file qm keeps at a predictable path next to a device (lock, log) without
/// following a symbolic link at its last component, so that whoever may write the directory
/// cannot aim it at another file (nothing is created or written at a link's target). A FIFO
/// does not block the open. `what` names the file in messages ("lock file").
pub fn open_no_follow(path: &Path, options: &mut OpenOptions, what: &str) -> Result<File, String> {
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    let file = options.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => format!(
            "{what} {} is a symbolic link: qm does not follow links for its {what}s, since \
             anyone who may write the directory could aim one at another file; remove the link",
            path.display()
        ),
        Some(libc::ENOENT)
            if path.parent().is_some_and(|d| !d.as_os_str().is_empty() && !d.exists()) =>
        {
            format!(
                "cannot create {what} {}: its directory {} does not exist",
                path.display(),
                path.parent().map(Path::display).expect("checked")
            )
        }
        // A FIFO nobody reads (ENXIO), a directory (EISDIR): say what is there instead.
        _ => match std::fs::symlink_metadata(path).ok().and_then(|m| not_regular(&m)) {
            Some(kind) => format!(
                "{what} {} is {kind}, not a regular file; remove it (qm creates its own)",
                path.display()
            ),
            None => format!("cannot open {what} {}: {e}", path.display()),
        },
    })?;
    // Non-blocking was only for the open: later reads and writes behave as usual.
    let flags = rustix::fs::fcntl_getfl(&file)
        .and_then(|f| rustix::fs::fcntl_setfl(&file, f - rustix::fs::OFlags::NONBLOCK))
        .map_err(|e| format!("cannot use {what} {}: {e}", path.display()));
    flags.map(|()| file)
}

/// What a file that is not a regular file is, for messages: `a directory`, `a FIFO`.
pub fn not_regular(meta: &Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a device node"
    })
}

/// Checks that an opened file at a predictable path belongs to us or root: someone else's
/// file there was planted.
pub fn check_owner(file: &File, path: &Path, what: &str) -> Result<(), String> {
    let meta =
        file.metadata().map_err(|e| format!("cannot inspect {what} {}: {e}", path.display()))?;
    if is_trusted_user(meta.uid()) {
        return Ok(());
    }
    Err(format!(
        "{what} {} belongs to {}, not to {}, so another user may have planted it; \
         remove it (qm creates its own)",
        path.display(),
        describe_user(meta.uid()),
        trusted_users()
    ))
}

/// Largest file [`read_trusted`] reads: far more than any configuration needs, and small
/// enough that a wrong file (a device, a log) given by mistake is refused, not loaded.
pub const TRUSTED_TEXT_MAX: u64 = 1024 * 1024;

/// Reads a file whose contents qm acts on (a configuration, which names commands to run):
/// it must be a regular text file of ours or root's that nobody else may write, of at most
/// [`TRUSTED_TEXT_MAX`] bytes. The checks are made on the opened file, so the text returned
/// is the text checked, even if the path changes meanwhile. A symbolic link is followed
/// only when the link itself is ours or root's (whoever made it chose the file read) and
/// its target passes.
pub fn read_trusted(path: &Path, what: &str) -> Result<String, String> {
    check_link_owner(path, what)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let meta =
        file.metadata().map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    check_trusted_file(&meta, path, what)?;
    let too_big = |len: u64| {
        format!(
            "refusing {what} {}: it is {len} bytes long, and a {what} is at most {} bytes; is \
             it the right file?",
            path.display(),
            TRUSTED_TEXT_MAX
        )
    };
    if meta.len() > TRUSTED_TEXT_MAX {
        return Err(too_big(meta.len()));
    }
    // The file may grow after the check: read no more than the limit and one byte.
    let mut bytes = Vec::new();
    file.take(TRUSTED_TEXT_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > TRUSTED_TEXT_MAX {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "refusing {what} {}: it is not text (byte {} is not UTF-8); is it the right file?",
            path.display(),
            e.utf8_error().valid_up_to() + 1
        )
    })
}

/// Refuses a symbolic link at `path` that another user made: in a directory others may
/// write, they could point it at any file of ours or root's, and that file would be read as
/// ours. A link of ours or root's is followed.
fn check_link_owner(path: &Path, what: &str) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_symlink() || is_trusted_user(meta.uid()) {
        return Ok(());
    }
    let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
    Err(format!(
        "refusing {what} {} (a link to {target}): the link belongs to {}, not to {}, \
         and whoever made it chooses which file qmd reads; remove the link, or name the file \
         itself",
        path.display(),
        describe_user(meta.uid()),
        trusted_users()
    ))
}

/// The ownership and mode rule of [`read_trusted`], on an opened file's metadata.
fn check_trusted_file(meta: &Metadata, path: &Path, what: &str) -> Result<(), String> {
    let shown = match std::fs::read_link(path) {
        Ok(target) => format!("{} (a link to {})", path.display(), target.display()),
        Err(_) => path.display().to_string(),
    };
    if !meta.is_file() {
        return Err(format!("refusing {what} {shown}: it is not a regular file"));
    }
    let (owner, mode) = (meta.uid(), meta.mode());
    let rule =
        format!("qmd acts only on files owned by {} that no one else may write", trusted_users());
    if !is_trusted_user(owner) {
        return Err(format!(
            "refusing {what} {shown}: it belongs to {} (mode {}), and {rule}; if you trust its \
             contents, `chown {} {}`",
            describe_user(owner),
            mode_text(mode),
            user_name(euid()).unwrap_or_else(|| euid().to_string()),
            path.display()
        ));
    }
    if let Some(writers) = other_writers(mode) {
        return Err(format!(
            "refusing {what} {shown}: its mode {} lets {writers} change it (owner {}), and \
             {rule}; `chmod go-w {}`",
            mode_text(mode),
            describe_user(owner),
            path.display()
        ));
    }
    Ok(())
}

/// Programs that take the script they run as their first argument: for a command such as
/// `sh job.sh` or `python3 /srv/job.py`, the script is what runs, so it is checked too.
const INTERPRETERS: &[&str] =
    &["sh", "bash", "dash", "ksh", "zsh", "python", "python3", "perl", "ruby", "node", "env"];

/// The files a shell command (`sh -c COMMAND`, run in `cwd`) executes that a path names: its
/// first word when it has a `/` (a bare program name is found on `PATH`, which is the
/// system's business), and the script an interpreter is given, with or without a `/`:
/// `sh job.sh` runs the `job.sh` of the working directory. (`env` finds its program on
/// `PATH`, so a bare name after it is not a file here.)
fn command_files(command: &str, cwd: Option<&Path>) -> Vec<std::path::PathBuf> {
    let mut words = command.split_whitespace().map(|w| w.trim_matches(['\'', '"']));
    let Some(program) = words.next() else { return Vec::new() };
    let mut named: Vec<&str> = Some(program).filter(|p| p.contains('/')).into_iter().collect();
    let base = program.rsplit('/').next().unwrap_or(program);
    if INTERPRETERS.contains(&base) {
        let script = words.find(|w| !w.starts_with('-') && !w.contains('='));
        named.extend(script.filter(|w| base != "env" || w.contains('/')));
    }
    let resolve = |w: &str| match cwd {
        Some(dir) if !w.starts_with('/') => dir.join(w.trim_start_matches("./")),
        _ => Path::new(w).to_path_buf(),
    };
    named.into_iter().map(resolve).collect()
}

/// Refuses a command whose program or script (see [`command_files`]) another user could
/// have written: it would run as qmd's user. Files that do not exist are left to the shell
/// to report. The same rule as a configuration's.
pub fn check_command_files(command: &str, cwd: Option<&Path>) -> Result<(), String> {
    for path in command_files(command, cwd) {
        check_link_owner(&path, "program")?;
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        check_trusted_file(&meta, &path, "program")?;
    }
    Ok(())
}

/// Makes sure `dir` is a directory only we may use, creating it (mode 0700) when it does not
/// exist; refuses one that is a symbolic link, not a directory, someone else's, or open to
/// group or others. `purpose` says what qm keeps there, for the message.
pub fn ensure_private_dir(dir: &Path, purpose: &str) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create private directory {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot inspect private directory {}: {e}", dir.display()))?;
    let problem = if meta.file_type().is_symlink() {
        "it is a symbolic link".to_string()
    } else if !meta.is_dir() {
        "it is not a directory".to_string()
    } else if meta.uid() != euid() {
        format!("it belongs to {}, not to {}", describe_user(meta.uid()), describe_user(euid()))
    } else if meta.mode() & 0o077 != 0 {
        format!("its mode {} lets group or others use it", mode_text(meta.mode()))
    } else {
        return Ok(());
    };
    Err(format!(
        "refusing directory {}: {problem}. qm keeps {purpose} there and needs it to be yours \
         alone (mode 0700); remove it (qm creates it again), or choose the socket with \
         --socket or QM_SOCKET",
        dir.display()
    ))
}

/// Why the directory holding a device is unsafe, when users other than its owner may write
/// it: they can plant or replace the files qm keeps next to the device.
pub fn open_directory_warning(dir: &Path) -> Option<String> {
    let mode = std::fs::metadata(dir).ok()?.mode();
    let writers = other_writers(mode)?;
    let sticky = if mode & 0o1000 != 0 {
        " (the sticky bit does not stop them from creating those files before qm does)"
    } else {
        ""
    };
    Some(format!(
        "directory {} (mode {}) may be written by {writers}: they can replace device files \
         there and plant the files qm keeps next to a device (configuration, lock, log, \
         socket){sticky}; keep devices in a directory only their owner may write",
        dir.display(),
        mode_text(mode)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_writers() {
        assert_eq!(mode_text(0o41777), "1777");
        assert_eq!(mode_text(0o100644), "0644");
        assert_eq!(other_writers(0o755), None);
        assert_eq!(other_writers(0o775), Some("its group"));
        assert_eq!(other_writers(0o1777), Some("its group and all other users"));
    }

    #[test]
    fn root_is_named() {
        assert_eq!(describe_user(0), "uid 0 (root)");
    }

    #[test]
    fn the_files_a_command_runs() {
        let cwd = Some(Path::new("/dev/qm"));
        let files = |c: &str| command_files(c, cwd);
        assert_eq!(files("./th.sh arg"), [Path::new("/dev/qm/th.sh")]);
        assert_eq!(files("/srv/job --x /etc/data"), [Path::new("/srv/job")]);
        assert_eq!(files("sh -e 'bin/job.sh' x"), [Path::new("/dev/qm/bin/job.sh")]);
        assert_eq!(
            files("/usr/bin/python3 -u /srv/a.py"),
            [Path::new("/usr/bin/python3"), Path::new("/srv/a.py")]
        );
        assert_eq!(files("sh worker.sh"), [Path::new("/dev/qm/worker.sh")]);
        assert_eq!(files("bash -x job"), [Path::new("/dev/qm/job")]);
        assert!(files("env python3 -u x.py").is_empty());
        assert_eq!(files("env ./x.py"), [Path::new("/dev/qm/x.py")]);
        assert!(files("mail -s subject ops </dev/null").is_empty());
        assert!(files("").is_empty());
    }
}
