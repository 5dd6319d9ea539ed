//! Device list commands: crdl, lidl, dsdl, livtoc, chdl, and qverify.

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
    let done = sh.call(Request::Device(DeviceRequest::Verify { qspace }))?;
    let Reply::Verified(report) = done.reply else { return Ok(()) };
    let text =
        if sh.wants_json(args.json) { render::json(&report) } else { render::verify(&report) };
    sh.output(&text);
    match report.problems.count() {
        0 => Ok(()),
        n => Err(format!("qverify found {}", qm_common::plural::count(n, "problem", "problems"))),
    }
}
