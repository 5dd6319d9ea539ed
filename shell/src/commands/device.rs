//! Device list commands: crdl, lidl, dsdl, livtoc, chdl; qverify, qbackup, qrestore.

use super::number;
use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::device::{ENTRY_MAX_PAGES, UdlEntry, check_destroy, check_first_entry_size};
use qm_common::names::check_device_path;
use qm_common::protocol::{DeviceRequest, Reply, Request};

/// A device path as typed.
pub fn device_name(text: &str) -> qm_common::QmResult<String> {
    check_device_path(text)?;
    Ok(text.to_string())
}

/// A device list index as typed.
pub fn dl_index(text: &str) -> qm_common::QmResult<u8> {
    number("Device list index", text, 0..=24u8)
}

pub fn crdl(sh: &mut Shell, args: Args) -> CmdResult {
    let page_size = match args.value('p') {
        Some(v) => {
            let size = v.trim().parse::<u32>().map_err(|_| {
                qm_common::QmError::invalid(
                    "Page size",
                    v,
                    "it must be a power of two from 512 to 65536 bytes",
                )
                .message
            })?;
            qm_common::device::check_page_size(size).map_err(|e| e.message)?;
            Some(size)
        }
        None => None,
    };
    let mut pos = Positionals::new(args.positionals);
    let device = sh.required(&mut pos, "Device name: ", device_name)?;
    let offset = sh.required(&mut pos, "Device offset: ", |s| {
        number("Device offset", s, 0..=ENTRY_MAX_PAGES)
    })?;
    // The device itself (entry 0) has a larger minimum: checked here, so that a terminal
    // asks for the size again rather than discarding every answer.
    let first = offset == 0 && std::path::Path::new(&device) == sh.device && sh.remote.is_none();
    let size = sh.required(&mut pos, "Device size: ", |s| {
        let size = number("Device size", s, 1..=ENTRY_MAX_PAGES)?;
        if first {
            check_first_entry_size(size)?;
        }
        Ok(size)
    })?;
    sh.call(Request::Device(DeviceRequest::Create { device, offset, size, page_size }))?;
    Ok(())
}

pub fn lidl(sh: &mut Shell, args: Args) -> CmdResult {
    let index = match args.positionals.first() {
        Some(i) => Some(dl_index(i).map_err(|e| e.message)?),
        None => None,
    };
    let done = sh.call(Request::Device(DeviceRequest::List { index }))?;
    if let Reply::Device(listing) = done.reply {
        let text = if sh.wants_json(args.json) {
            render::json(&listing)
        } else {
            render::device_listing(&listing, sh.verbose)
        };
        sh.output(&text);
    }
    Ok(())
}

pub fn livtoc(sh: &mut Shell, args: Args) -> CmdResult {
    let done = sh.call(Request::Device(DeviceRequest::Vtoc))?;
    if let Reply::Vtoc(entries) = done.reply {
        let text = if sh.wants_json(args.json) {
            render::json(&entries)
        } else {
            render::vtoc(&sh.device.display().to_string(), &entries)
        };
        sh.output(&text);
    }
    Ok(())
}

pub fn dsdl(sh: &mut Shell, args: Args) -> CmdResult {
    let confirmed = args.flag('y');
    let mut pos = Positionals::new(args.positionals);
    let index = sh.required(&mut pos, "Device list index: ", dl_index)?;
    if !confirmed {
        let check = destroyable(sh, index);
        if !sh.confirm_checked(check)? {
            sh.warn("Device not destroyed");
            return Ok(());
        }
    }
    sh.call(Request::Device(DeviceRequest::Destroy { index }))?;
    Ok(())
}

/// Whether entry `index` may be destroyed, checked before asking for confirmation.
fn destroyable(sh: &mut Shell, index: u8) -> CmdResult {
    let udl: Vec<UdlEntry> =
        match sh.call(Request::Device(DeviceRequest::List { index: None }))?.reply {
            Reply::Device(listing) => listing.entries.into_iter().map(|e| e.entry).collect(),
            _ => return Ok(()),
        };
    let Reply::Vtoc(vtoc) = sh.call(Request::Device(DeviceRequest::Vtoc))?.reply else {
        return Ok(());
    };
    check_destroy(&udl, &vtoc, index).map(drop).map_err(|e| e.message)
}

pub fn chdl(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let index = sh.required(&mut pos, "Device list index: ", dl_index)?;
    let new_name = if let Some(name) = pos.take() {
        device_name(&name).map_err(|e| e.message)?
    } else {
        let done = sh.call(Request::Device(DeviceRequest::Rename { index, new_name: None }))?;
        if let Reply::DeviceName(current) = done.reply {
            sh.info(&format!("Current device name: {current}"));
        }
        sh.required(&mut pos, "New device name: ", device_name)?
    };
    sh.call(Request::Device(DeviceRequest::Rename { index, new_name: Some(new_name) }))?;
    Ok(())
}

/// `qverify [QSPACE]`: prints what was checked and every problem found; fails (qmadmin
/// exits 1) when there is one.
pub fn qverify(sh: &mut Shell, args: Args) -> CmdResult {
    let mut pos = Positionals::new(args.positionals);
    let qspace = match pos.take() {
        Some(name) => Some(super::qspace::qspace_name(&name).map_err(|e| e.to_string())?),
        None => None,
    };
    let done = sh.call_long(Request::Device(DeviceRequest::Verify { qspace }))?;
    let Reply::Verified(report) = done.reply else { return Ok(()) };
    let text =
        if sh.wants_json(args.json) { render::json(&report) } else { render::verify(&report) };
    sh.output(&text);
    match report.problems.count() {
        0 => Ok(()),
        n => Err(format!("qverify found {}", qm_common::plural::count(n, "problem", "problems"))),
    }
}

/// A directory path as typed, made absolute from qmadmin's working directory (the daemon
/// has its own).
pub fn absolute_dir(text: &str) -> qm_common::QmResult<String> {
    if text.is_empty() {
        return Err(qm_common::QmError::invalid("Directory", text, "give a path"));
    }
    let path = std::path::Path::new(text);
    let path = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir()
            .map_err(|e| qm_common::QmError::system(format!("the current directory: {e}")))?
            .join(path),
    };
    Ok(path.display().to_string())
}

/// `qbackup [-y] DIR`: a consistent copy of the whole device, made while it serves.
pub fn qbackup(sh: &mut Shell, args: Args) -> CmdResult {
    let confirmed = args.flag('y');
    let mut pos = Positionals::new(args.positionals);
    let dir = sh.required(&mut pos, "Backup directory: ", absolute_dir)?;
    if !confirmed && !sh.confirm()? {
        sh.warn("Device not backed up");
        return Ok(());
    }
    let done = sh.call_long(Request::Device(DeviceRequest::Backup { dir }))?;
    if let Reply::BackedUp(report) = done.reply {
        let text =
            if sh.wants_json(args.json) { render::json(&report) } else { render::backup(&report) };
        sh.output(&text);
    }
    Ok(())
}

/// `qrestore DIR NEWDEVICE [-m OLD=NEW ...]`: a working device from a backup. The `-m`
/// options follow the two paths, as many as there are files to move.
pub fn qrestore(sh: &mut Shell, args: Args) -> CmdResult {
    let leading = args.value('m').map(str::to_string);
    let mut words: Vec<String> = args.positionals;
    let split = words.iter().position(|w| w.starts_with("-m")).unwrap_or(words.len());
    let mut maps = words.split_off(split);
    // One -m before the paths is read by the option parser.
    if let Some(first) = leading {
        maps.splice(0..0, ["-m".to_string(), first]);
    }
    let map = moves(&maps)?;
    let mut pos = Positionals::new(words);
    let dir = sh.required(&mut pos, "Backup directory: ", absolute_dir)?;
    let device = sh.required(&mut pos, "New device: ", absolute_dir)?;
    if let Some(extra) = pos.take() {
        return Err(format!("qrestore: unexpected '{extra}' (the -m options come last)"));
    }
    let done = sh.call_long(Request::Device(DeviceRequest::Restore { dir, device, map }))?;
    if let Reply::Restored(report) = done.reply {
        let text =
            if sh.wants_json(args.json) { render::json(&report) } else { render::restore(&report) };
        sh.output(&text);
    }
    Ok(())
}

/// The `-m OLD=NEW` (or `-mOLD=NEW`) options of qrestore.
fn moves(words: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut map = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("-m") {
            Some("") => words.next().ok_or("qrestore: -m needs OLDPATH=NEWPATH")?.as_str(),
            Some(attached) => attached,
            None => return Err(format!("qrestore: unexpected '{word}' among the -m options")),
        };
        let Some((old, new)) = value.split_once('=') else {
            return Err(format!("qrestore: -m {value}: give OLDPATH=NEWPATH"));
        };
        let new = absolute_dir(new).map_err(|e| e.to_string())?;
        map.push((old.to_string(), new));
    }
    Ok(map)
}
