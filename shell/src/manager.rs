//! A queue manager's name where qmadmin takes a device or an address: the profile
//! ([`qm_common::profile`]) says where it is, and the options are rewritten to that.

use crate::options::Options;
use qm_common::profile::{Place, Profile};

/// Rewrites `options` when they name a manager rather than a device or address:
/// - a device argument that is a manager's name (devices are absolute paths);
/// - `--connect NAME` that is not an address list;
/// - nothing at all (no device, no QMCONFIG, no --connect): `QM_MANAGER`, else the
///   profiles' managers in priority order, the first that answers.
///
/// The profile is read only then, so that Tuxedo's scripts, which always name their
/// device, never depend on it.
pub fn resolve(options: &mut Options) -> Result<(), String> {
    if let Some(name) = options.device.as_ref().filter(|d| d.is_relative()) {
        let Some(name) = name.to_str().filter(|n| !n.contains('/')) else { return Ok(()) };
        let profile = Profile::load()?;
        if let Some(manager) = profile.find(name).or(profile.chosen().filter(|m| m.name == name)) {
            let manager = manager.clone();
            aim(options, &manager.place);
        }
        return Ok(());
    }
    if let Some(text) = &options.connect {
        if qm_common::address::Address::parse_list(text).is_ok() {
            return Ok(());
        }
        let profile = Profile::load()?;
        let Some(manager) = profile.find(text.trim()) else {
            let forms = qm_common::address::ADDRESS_FORMS;
            return Err(format!(
                "--connect {text}: neither an address ({forms}, several separated by commas) \
                 nor a queue manager of the profiles ({})",
                profile.read_text()
            ));
        };
        let manager = manager.clone();
        aim(options, &manager.place);
        return Ok(());
    }
    let qmconfig = std::env::var_os(qm_common::paths::QMCONFIG_ENV).filter(|v| !v.is_empty());
    if options.device.is_some() || options.connect_file.is_some() || qmconfig.is_some() {
        return Ok(());
    }
    let profile = Profile::load()?;
    let addresses: Vec<String> =
        profile.candidates().iter().flat_map(|m| m.addresses()).map(|a| a.to_string()).collect();
    if !addresses.is_empty() {
        options.connect = Some(addresses.join(","));
    }
    Ok(())
}

/// Points `options` at `place`.
fn aim(options: &mut Options, place: &Place) {
    match place {
        Place::Device { device, socket } => {
            options.connect = None;
            options.device = Some(device.clone());
            options.socket = socket.clone().or(options.socket.take());
        }
        Place::Addresses(list) => {
            options.device = None;
            options.connect =
                Some(list.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","));
        }
    }
}
