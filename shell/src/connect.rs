//! Finding the daemon: connect to the device's socket, and start `qmd` when none answers.

use qm_common::client::Client;
use qm_common::protocol::ClientKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `qmd` next to this executable, else the one on `PATH`.
fn qmd_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("qmd"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("qmd"))
}

/// Starts `qmd --detach` for `device`; returns the one line to tell the user.
fn start_daemon(device: &Path, socket: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new(qmd_program());
    cmd.arg("--detach").arg(device);
    if let Some(s) = socket {
        cmd.arg("--socket").arg(s);
    }
    let out = cmd.output().map_err(|e| format!("cannot start qmd: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(if stderr.is_empty() { stdout } else { stderr });
    }
    let log = qm_common::paths::log_path(device);
    Ok(format!("started qmd {} (log {})", stdout.trim_start_matches("qmd: "), log.display()))
}

/// Connects to the daemon serving `device`, starting one when allowed and needed.
pub async fn connect(
    device: &Path,
    socket: Option<&Path>,
    autostart: bool,
) -> Result<Client, String> {
    let path = qm_common::paths::resolve_socket(device, socket);
    let first = Client::connect(&path, "qmadmin", ClientKind::Admin).await;
    let client = match first {
        Ok(c) => c,
        Err(e) if !autostart => return Err(format!("no qmd answers on {} ({e})", path.display())),
        Err(_) => {
            let line = start_daemon(device, socket)?;
            eprintln!("qmadmin: {line}");
            Client::connect(&path, "qmadmin", ClientKind::Admin).await.map_err(|e| e.message)?
        }
    };
    let serves = &client.welcome().device;
    if Path::new(serves) != device {
        return Err(format!(
            "the qmd on {} serves {serves}, not {}",
            path.display(),
            device.display()
        ));
    }
    Ok(client)
}
