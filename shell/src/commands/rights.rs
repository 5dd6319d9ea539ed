//! Rights of principals: qgrant, qrevoke, qauth, whoami (qm's own: Tuxedo has none).

use crate::getopt::Args;
use crate::render;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::protocol::{Reply, Request, RightsRequest};
use qm_common::rights::{Grant, Right, Scope, parse_principal};

const PRINCIPAL: &str = "Principal (unix:USER, cert:ID, anonymous; * patterns allowed): ";
const RIGHTS: &str = "Rights (enqueue, dequeue, browse, admin; several separated by commas): ";
const SCOPE: &str = "Scope (QSPACE or QSPACE/QUEUE, * patterns allowed) [default=* (everywhere)]: ";

/// The grant `qgrant` and `qrevoke` name. Missing arguments are asked for; the scope only
/// when something else was asked for too, since a one-line command that stops after its
/// rights means everywhere (and in a script the next line must not be taken for a scope).
fn read_grant(sh: &mut Shell, args: Args) -> Result<Grant, String> {
    let prompted = args.positionals.len() < 2;
    let mut pos = Positionals::new(args.positionals);
    let principal =
        sh.required(&mut pos, PRINCIPAL, |s| parse_principal(s).map(|_| s.to_string()))?;
    let principal = parse_principal(&principal).map_err(|e| e.message)?;
    let rights = sh.required(&mut pos, RIGHTS, Right::parse_list)?;
    let scope = if prompted || pos.peek().is_some() {
        sh.optional(&mut pos, SCOPE, Scope::everywhere(), None, Scope::parse)?
    } else {
        Scope::everywhere()
    };
    Ok(Grant { principal, rights, scope })
}

pub fn qgrant(sh: &mut Shell, args: Args) -> CmdResult {
    let grant = read_grant(sh, args)?;
    sh.call(Request::Rights(RightsRequest::Grant(grant)))?;
    Ok(())
}

pub fn qrevoke(sh: &mut Shell, args: Args) -> CmdResult {
    let grant = read_grant(sh, args)?;
    sh.call(Request::Rights(RightsRequest::Revoke(grant)))?;
    Ok(())
}

pub fn qauth(sh: &mut Shell, args: Args) -> CmdResult {
    let principal =
        args.positionals.first().map(|p| parse_principal(p)).transpose().map_err(|e| e.message)?;
    let request = Request::Rights(RightsRequest::List { principal: principal.clone() });
    if let Reply::Grants(listing) = sh.call(request)?.reply {
        if sh.wants_json(args.json) {
            sh.output(&render::json(&listing));
        } else {
            sh.output(&render::grants(&listing, principal.as_ref()));
        }
    }
    Ok(())
}

pub fn whoami(sh: &mut Shell, args: Args) -> CmdResult {
    if let Reply::Identity(me) = sh.call(Request::Rights(RightsRequest::WhoAmI))?.reply {
        let text = if sh.wants_json(args.json) { render::json(&me) } else { render::identity(&me) };
        sh.output(&text);
    }
    Ok(())
}
