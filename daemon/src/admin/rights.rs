//! Rights of principals: `qgrant`, `qrevoke`, `qauth`, `whoami`. Grants are kept in the
//! device file; who may run these is decided by [`crate::rights`] like for any request.

use super::Ctx;
use crate::state::Store;
use crate::storage::device::put_grant;
use qm_common::principal::Principal;
use qm_common::protocol::{Note, Reply, RightsRequest};
use qm_common::rights::{Grant, GrantListing, Identity, Right, rights_text};
use qm_common::{Diagnostic, QmError, QmResult};

pub fn handle(ctx: &mut Ctx<'_>, store: &mut Store, request: RightsRequest) -> QmResult<Reply> {
    match request {
        RightsRequest::Grant(grant) => grant_rights(ctx, store, grant),
        RightsRequest::Revoke(grant) => revoke_rights(ctx, store, grant),
        RightsRequest::List { principal } => list(ctx, store, principal),
        RightsRequest::WhoAmI => whoami(ctx),
    }
}

/// The device the grants are kept in: without one there is nowhere to keep them.
fn device<'s>(ctx: &Ctx<'_>, store: &'s Store) -> QmResult<&'s crate::storage::Device> {
    match &store.device {
        Some(device) => Ok(device),
        None => Err(QmError::not_found(format!(
            "Rights are kept in the device, and {} does not exist yet; create it with crdl, \
             then grant",
            ctx.daemon.device_path.display()
        ))),
    }
}

/// The rights granted to exactly `grant.principal` in exactly `grant.scope`.
fn granted_there(store: &Store, ctx: &Ctx<'_>, grant: &Grant) -> QmResult<Vec<Right>> {
    Ok(device(ctx, store)?
        .grants()?
        .into_iter()
        .find(|g| g.principal == grant.principal && g.scope == grant.scope)
        .map(|g| g.rights)
        .unwrap_or_default())
}

/// Writes what `grant.principal` holds in `grant.scope` and makes it the rule at once.
fn store_grant(ctx: &Ctx<'_>, store: &Store, grant: &Grant) -> QmResult<()> {
    device(ctx, store)?.write(|txn| put_grant(txn, grant))?;
    ctx.daemon.rights.reload(store)?;
    Ok(())
}

fn grant_rights(ctx: &mut Ctx<'_>, store: &mut Store, grant: Grant) -> QmResult<Reply> {
    grant.validate()?;
    let held = granted_there(store, ctx, &grant)?;
    let mut rights = held.clone();
    rights.extend(&grant.rights);
    rights.sort();
    rights.dedup();
    let (who, scope) = (&grant.principal, &grant.scope);
    if rights == held {
        ctx.note(Note::info(format!(
            "{who} already holds {} on {scope}",
            rights_text(&grant.rights)
        )));
        return Ok(Reply::Unit);
    }
    store_grant(ctx, store, &Grant { rights: rights.clone(), ..grant.clone() })?;
    tracing::info!("granted {} on {scope} to {who}", rights_text(&grant.rights));
    ctx.note(Note::info(format!(
        "Granted {} on {scope} to {who} (it now holds {} there)",
        rights_text(&grant.rights),
        rights_text(&rights)
    )));
    if who.is_anonymous() && grant.rights.contains(&Right::Admin) {
        ctx.note(Note::warn(format!(
            "anonymous now holds admin on {scope}: anyone who reaches qmd over plain TCP or \
             HTTP may administer it"
        )));
    }
    Ok(Reply::Unit)
}

fn revoke_rights(ctx: &mut Ctx<'_>, store: &mut Store, grant: Grant) -> QmResult<Reply> {
    grant.validate()?;
    let held = granted_there(store, ctx, &grant)?;
    let (who, scope) = (&grant.principal, &grant.scope);
    if held.is_empty() {
        return Err(QmError::not_found(format!(
            "{who} holds no grant on {scope}; nothing was revoked. A grant is revoked as it \
             was given, with the same principal and scope: qauth {who} shows them"
        )));
    }
    let missing: Vec<Right> = grant.rights.iter().copied().filter(|r| !held.contains(r)).collect();
    if !missing.is_empty() {
        return Err(QmError::new(
            Diagnostic::NotFound,
            format!(
                "{who} was not granted {} on {scope} (it holds {} there); nothing was revoked",
                rights_text(&missing),
                rights_text(&held)
            ),
        ));
    }
    let rest: Vec<Right> = held.iter().copied().filter(|r| !grant.rights.contains(r)).collect();
    store_grant(ctx, store, &Grant { rights: rest.clone(), ..grant.clone() })?;
    tracing::info!("revoked {} on {scope} from {who}", rights_text(&grant.rights));
    let left = if rest.is_empty() { "nothing".to_string() } else { rights_text(&rest) };
    ctx.note(Note::info(format!(
        "Revoked {} on {scope} from {who} (it holds {left} there now)",
        rights_text(&grant.rights)
    )));
    Ok(Reply::Unit)
}

fn list(ctx: &Ctx<'_>, store: &Store, principal: Option<Principal>) -> QmResult<Reply> {
    let mut grants = match &store.device {
        Some(device) => device.grants()?,
        None => Vec::new(),
    };
    if let Some(p) = &principal {
        grants.retain(|g| g.principal == *p || g.names(p));
    }
    grants.sort_by(|a, b| (&a.principal, &a.scope).cmp(&(&b.principal, &b.scope)));
    let always_admin = ctx.daemon.rights.always_admin_list();
    Ok(Reply::Grants(GrantListing { always_admin, grants }))
}

fn whoami(ctx: &Ctx<'_>) -> QmResult<Reply> {
    let entry = ctx
        .daemon
        .sessions
        .get(ctx.session)
        .ok_or_else(|| QmError::system(format!("session {} is not registered", ctx.session)))?;
    let always_admin = ctx.daemon.rights.always_admin(&entry.principal);
    Ok(Reply::Identity(Identity { principal: entry.principal, face: entry.face, always_admin }))
}
