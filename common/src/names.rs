//! Names and their limits: devices, queue spaces, queues.
//!
//! The limits are Tuxedo's (a queue space name has at most 15 characters, a queue name 127, a
//! device path 64), so that definitions move between Tuxedo and qm unchanged.

use crate::error::{QmError, QmResult};

/// Longest queue space name (Tuxedo `TA_APPQSPACENAME`).
pub const QSPACE_NAME_MAX: usize = 15;
/// Longest queue name (Tuxedo 11gR1 and later, `TMQNAMELEN`).
pub const QUEUE_NAME_MAX: usize = 127;
/// Longest device path in the universal device list (`TA_CFGDEVICE`).
pub const DEVICE_NAME_MAX: usize = 64;
/// Longest threshold command (`TA_CMD`).
pub const COMMAND_MAX: usize = 127;
/// Longest queue manager name in a profile.
pub const MANAGER_NAME_MAX: usize = 64;

fn check_name(field: &str, name: &str, max: usize) -> QmResult<()> {
    if name.is_empty() {
        return Err(QmError::inval(format!("{field} must be specified")));
    }
    if name.chars().count() > max {
        return Err(QmError::invalid(
            field,
            name,
            &format!("at most {max} characters are allowed"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control() || *c == ',') {
        return Err(QmError::invalid(
            field,
            name,
            &format!("white space, control characters and ',' are not allowed (found {c:?})"),
        ));
    }
    check_visible(field, name)
}

fn check_visible(field: &str, name: &str) -> QmResult<()> {
    match name.chars().find(|c| crate::error::is_invisible(*c)) {
        Some(c) => Err(QmError::invalid(
            field,
            name,
            &format!(
                "invisible formatting characters are not allowed, since they make one name look \
                 like another (found U+{:04X})",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// A queue space name: 1 to 15 characters, no white space or commas.
pub fn check_qspace_name(name: &str) -> QmResult<()> {
    check_name("Queue space name", name, QSPACE_NAME_MAX)
}

/// A queue name: 1 to 127 characters, no white space or commas.
pub fn check_queue_name(name: &str) -> QmResult<()> {
    check_name("Queue name", name, QUEUE_NAME_MAX)
}

/// A queue alias: spelled like a queue name (it may hold `/`, as in `cf/hotline`).
pub fn check_alias(name: &str) -> QmResult<()> {
    check_name("Alias", name, QUEUE_NAME_MAX)
}

/// A queue manager's name in a profile: 1 to 64 characters, no white space, commas or
/// `/` (it is the first part of a full queue name, `MANAGER/QSPACE/QUEUE`).
pub fn check_manager(name: &str) -> Result<(), String> {
    check_name("Manager name", name, MANAGER_NAME_MAX).map_err(|e| e.message)?;
    if name.contains('/') {
        return Err(QmError::invalid(
            "Manager name",
            name,
            "'/' is not allowed: it separates the parts of MANAGER/QSPACE/QUEUE",
        )
        .message);
    }
    Ok(())
}

/// An error queue name may also be empty (no error queue).
pub fn check_error_queue_name(name: &str) -> QmResult<()> {
    if name.is_empty() { Ok(()) } else { check_name("Error queue name", name, QUEUE_NAME_MAX) }
}

/// A device path: absolute, at most 64 characters.
pub fn check_device_path(path: &str) -> QmResult<()> {
    if path.is_empty() {
        return Err(QmError::inval("Device name must be specified"));
    }
    if !path.starts_with('/') {
        return Err(QmError::invalid("Device name", path, "it must be an absolute path"));
    }
    if path.chars().count() > DEVICE_NAME_MAX {
        return Err(QmError::invalid(
            "Device name",
            path,
            &format!("at most {DEVICE_NAME_MAX} characters are allowed"),
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(QmError::invalid("Device name", path, "control characters are not allowed"));
    }
    check_visible("Device name", path)
}

/// A threshold command: at most 127 characters (empty means none).
pub fn check_command(field: &str, command: &str) -> QmResult<()> {
    if command.chars().count() > COMMAND_MAX {
        return Err(QmError::invalid(
            field,
            command,
            &format!("at most {COMMAND_MAX} characters are allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qspace_name_limits() {
        assert!(check_qspace_name("QSPACE").is_ok());
        assert!(check_qspace_name(&"x".repeat(15)).is_ok());
        let err = check_qspace_name(&"x".repeat(16)).unwrap_err();
        assert!(err.message.contains("at most 15"), "{err}");
        assert!(check_qspace_name("").is_err());
        assert!(check_qspace_name("a b").is_err());
    }

    #[test]
    fn device_paths() {
        assert!(check_device_path("/tmp/q").is_ok());
        assert!(check_device_path("tmp/q").unwrap_err().message.contains("absolute"));
        assert!(check_device_path(&format!("/{}", "a".repeat(64))).is_err());
    }
}
