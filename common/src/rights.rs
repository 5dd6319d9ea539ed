//! Rights: what a principal may do, and where (seed 004: queues "configured so that certain
//! principals can use it").
//!
//! A [`Grant`] gives a principal pattern some [`Right`]s within a [`Scope`]: everything
//! (`*`), a queue space (`QS`) or one queue of it (`QS/RESULTS`), either part possibly a
//! pattern with `*`. Patterns know only `*` (any run of characters, none included): principals
//! such as certificate identities may hold `?` or `[`, which must stay plain characters.
//!
//! The rules, for the daemon to apply (this module only matches):
//! * `admin` gives every right; the others give only themselves.
//! * A grant whose principal is a pattern never gives `anonymous` `admin`: a peer that proved
//!   nothing administers only when an operator named `anonymous` itself.

use crate::error::{QmError, QmResult, shown};
use crate::principal::{Face, Principal};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing a principal may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Put messages on a queue.
    Enqueue,
    /// Take messages off a queue.
    Dequeue,
    /// Read without changing: peek, `qlist`, `qinfo`, `qspacelist` and the other listings.
    Browse,
    /// Everything else: admin and message-administration commands, `daemon stop/reload`,
    /// granting rights. Gives the other three as well.
    Admin,
}

/// What `RIGHT[,RIGHT]` accepts, for messages.
const RIGHT_FORMS: &str = "give enqueue, dequeue, browse or admin, several separated by commas \
                           (e.g. enqueue,browse)";

impl Right {
    pub const ALL: [Right; 4] = [Right::Enqueue, Right::Dequeue, Right::Browse, Right::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Right::Enqueue => "enqueue",
            Right::Dequeue => "dequeue",
            Right::Browse => "browse",
            Right::Admin => "admin",
        }
    }

    /// Whether holding `self` allows what `wanted` allows.
    pub fn gives(self, wanted: Right) -> bool {
        self == wanted || self == Right::Admin
    }

    /// `RIGHT[,RIGHT]`: sorted, without repeats; anything but the four names is refused.
    pub fn parse_list(text: &str) -> QmResult<Vec<Right>> {
        if text.trim().is_empty() {
            return Err(QmError::inval(format!("Rights must be specified; {RIGHT_FORMS}")));
        }
        let mut rights = Vec::new();
        for word in text.split(',') {
            let right = Right::ALL
                .into_iter()
                .find(|r| r.name() == word.trim())
                .ok_or_else(|| QmError::invalid("Right", word, RIGHT_FORMS))?;
            rights.push(right);
        }
        rights.sort();
        rights.dedup();
        Ok(rights)
    }

    /// What a refusal says the principal may not do there: `dequeue from QS/RESULTS`.
    fn action(self, place: &Place) -> String {
        match self {
            Right::Enqueue => format!("enqueue to {place}"),
            Right::Dequeue => format!("dequeue from {place}"),
            Right::Browse => format!("browse {place}"),
            Right::Admin => format!("administer {place}"),
        }
    }
}

/// `enqueue,browse`.
pub fn rights_text(rights: &[Right]) -> String {
    rights.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
}

/// Where something is done, as a right is checked against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The daemon as a whole: its device, its rights, its forwarders.
    Daemon,
    Space(String),
    Queue(String, String),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Daemon => f.write_str("this qmd"),
            Place::Space(s) => f.write_str(&shown(s)),
            Place::Queue(s, q) => write!(f, "{}/{}", shown(s), shown(q)),
        }
    }
}

/// Where a grant applies: every queue space matching `qspace` and, with `queue`, only its
/// queues matching that. `*` alone (no queue) is everywhere, the daemon included.
/// Written `*`, `QSPACE` or `QSPACE/QUEUE`; `QSPACE/*` is the same as `QSPACE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Scope {
    pub qspace: String,
    pub queue: Option<String>,
}

const SCOPE_FORMS: &str = "write QSPACE or QSPACE/QUEUE, where either part may hold * patterns \
                           (e.g. QS, QS/RESULTS, QS/render-*), or * for everything";

impl Scope {
    pub fn everywhere() -> Scope {
        Scope { qspace: "*".into(), queue: None }
    }

    pub fn is_everywhere(&self) -> bool {
        self.qspace == "*" && self.queue.is_none()
    }

    /// A scope as written; the part before the first `/` is the queue space.
    pub fn parse(text: &str) -> QmResult<Scope> {
        let bad = |why: &str| QmError::invalid("Scope", text, &format!("{why}; {SCOPE_FORMS}"));
        let (qspace, queue) = match text.split_once('/') {
            Some((s, q)) => (s, Some(q)),
            None => (text, None),
        };
        if qspace.is_empty() {
            return Err(bad("the queue space part is empty"));
        }
        // `*` stands for characters of a name: the rest must be allowed in one.
        let part_ok = |part: &str, what: &str, max: usize| {
            let hidden = |c: &char| {
                c.is_whitespace() || c.is_control() || *c == ',' || crate::error::is_invisible(*c)
            };
            if let Some(c) = part.chars().find(hidden) {
                let why = format!(
                    "white space, control and invisible characters and ',' are not allowed in \
                     a {what} name (found {c:?})"
                );
                return Err(bad(&why));
            }
            if part.chars().filter(|c| *c != '*').count() > max {
                return Err(bad(&format!("a {what} name has at most {max} characters")));
            }
            Ok(())
        };
        part_ok(qspace, "queue space", crate::names::QSPACE_NAME_MAX)?;
        let queue = match queue {
            Some("") => return Err(bad("the queue part after / is empty")),
            Some(q) => {
                part_ok(q, "queue", crate::names::QUEUE_NAME_MAX)?;
                Some(q).filter(|q| *q != "*")
            }
            None => None,
        };
        // Patterns may be longer than the names they match, but not without end.
        if qspace.chars().count() > PATTERN_MAX
            || queue.is_some_and(|q| q.chars().count() > PATTERN_MAX)
        {
            return Err(bad(&format!("each part has at most {PATTERN_MAX} characters")));
        }
        Ok(Scope { qspace: qspace.to_string(), queue: queue.map(str::to_string) })
    }

    /// Whether the scope reaches `place`. Only the scope `*` reaches the daemon as a whole.
    pub fn covers(&self, place: &Place) -> bool {
        match place {
            Place::Daemon => self.is_everywhere(),
            Place::Space(s) => self.queue.is_none() && matches(&self.qspace, s),
            Place::Queue(s, q) => {
                matches(&self.qspace, s) && self.queue.as_ref().is_none_or(|p| matches(p, q))
            }
        }
    }

    /// Whether the scope reaches the queue space `qspace` or any of its queues.
    pub fn touches(&self, qspace: &str) -> bool {
        matches(&self.qspace, qspace)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.queue {
            Some(q) => write!(f, "{}/{}", self.qspace, q),
            None => f.write_str(&self.qspace),
        }
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.to_string()
    }
}

impl TryFrom<String> for Scope {
    type Error = QmError;
    fn try_from(text: String) -> QmResult<Scope> {
        Scope::parse(&text)
    }
}

/// Longest principal or scope pattern accepted.
pub const PATTERN_MAX: usize = 256;

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and every other character for itself. Compared byte by byte, without
/// allocating (it runs on every request of a granted principal): a literal part starts with
/// the first byte of a character, which no byte inside a character equals, so byte matches
/// are character matches.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen, and where in the text its run would end if it grew by one.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A principal pattern as an operator wrote it: `unix:NAME`, `cert:ID`, `anonymous`, or a
/// pattern with `*` (`cert:render-*`, `unix:*`, `*`).
pub fn parse_principal(text: &str) -> QmResult<Principal> {
    let forms = "write unix:USER, cert:ID or anonymous, or a pattern with * (e.g. cert:render-*)";
    if text.is_empty() {
        return Err(QmError::inval(format!("Principal must be specified; {forms}")));
    }
    if let Some(c) =
        text.chars().find(|c| c.is_whitespace() || c.is_control() || crate::error::is_invisible(*c))
    {
        let why = format!(
            "white space, control and invisible characters are not allowed (found {c:?}); {forms}"
        );
        return Err(QmError::invalid("Principal", text, &why));
    }
    if text.chars().count() > PATTERN_MAX {
        return Err(QmError::invalid(
            "Principal",
            text,
            &format!("at most {PATTERN_MAX} characters are allowed"),
        ));
    }
    Principal::parse(text).ok_or_else(|| QmError::invalid("Principal", text, forms))
}

/// Some rights of a principal pattern within a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub principal: Principal,
    pub rights: Vec<Right>,
    pub scope: Scope,
}

impl Grant {
    /// A grant from what `qgrant` and `qrevoke` take; `scope: None` is everywhere.
    pub fn parse(principal: &str, rights: &str, scope: Option<&str>) -> QmResult<Grant> {
        Ok(Grant {
            principal: parse_principal(principal)?,
            rights: Right::parse_list(rights)?,
            scope: scope.map(Scope::parse).transpose()?.unwrap_or_else(Scope::everywhere),
        })
    }

    /// Checks a grant that came over the wire as `parse` would have.
    pub fn validate(&self) -> QmResult<()> {
        parse_principal(self.principal.as_str())?;
        if self.rights.is_empty() {
            return Err(QmError::inval(format!("Rights must be specified; {RIGHT_FORMS}")));
        }
        Scope::parse(&self.scope.to_string()).map(|_| ())
    }

    /// Whether the grant's principal (a name or a pattern) is `who`.
    pub fn names(&self, who: &Principal) -> bool {
        matches(self.principal.as_str(), who.as_str())
    }

    /// The rights this grant gives `who` (none when it does not name `who`): a pattern
    /// gives `anonymous` no `admin`.
    pub fn rights_of(&self, who: &Principal) -> impl Iterator<Item = Right> + '_ {
        let named = self.names(who);
        let by_name = self.principal == *who;
        let anonymous = who.is_anonymous();
        self.rights
            .iter()
            .copied()
            .filter(move |r| named && !(anonymous && !by_name && *r == Right::Admin))
    }

    /// Whether this grant lets `who` do what `wanted` allows at `place`.
    pub fn allows(&self, who: &Principal, wanted: Right, place: &Place) -> bool {
        self.scope.covers(place) && self.rights_of(who).any(|r| r.gives(wanted))
    }
}

/// Whether any of `grants` lets `who` do what `wanted` allows at `place`.
pub fn allowed(grants: &[Grant], who: &Principal, wanted: Right, place: &Place) -> bool {
    grants.iter().any(|g| g.allows(who, wanted, place))
}

/// The refusal of `who` doing what `wanted` allows at `place`: `QMEPERM: cert:render-17 may
/// not dequeue from QS/RESULTS`.
pub fn refusal(who: &Principal, wanted: Right, place: &Place) -> QmError {
    let diagnostic = crate::Diagnostic::Perm;
    let who = shown(who.as_str());
    QmError::new(
        diagnostic,
        format!("{}: {who} may not {}", diagnostic.name(), wanted.action(place)),
    )
}

/// The refusal of `who` opening the queue space `qspace`, where it holds nothing.
pub fn no_right_in(who: &Principal, qspace: &str) -> QmError {
    let diagnostic = crate::Diagnostic::Perm;
    QmError::new(
        diagnostic,
        format!(
            "{}: {} may not open {}: it holds no right on it or its queues",
            diagnostic.name(),
            shown(who.as_str()),
            shown(qspace)
        ),
    )
}

/// The grants `qauth` lists, with the principals that hold `admin` everywhere whatever is
/// granted (the daemon's owner and root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantListing {
    pub always_admin: Vec<Principal>,
    pub grants: Vec<Grant>,
}

/// Who a session is, as `whoami` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub principal: Principal,
    pub face: Face,
    /// The daemon's owner or root: `admin` everywhere, whatever is granted.
    pub always_admin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Principal {
        parse_principal(text).unwrap()
    }

    #[test]
    fn star_patterns() {
        assert!(matches("*", ""));
        assert!(matches("cert:render-*", "cert:render-17"));
        assert!(!matches("cert:render-*", "cert:rende"));
        assert!(matches("a*b*c", "aXXbYYbc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("QS", "QS"));
        assert!(!matches("QS", "QS2"));
        // Only `*` is special.
        assert!(matches("cert:a?b", "cert:a?b"));
        assert!(!matches("cert:a?b", "cert:axb"));
        assert!(matches("QS/é*", "QS/éèê"));
        assert!(!matches("*è", "éé"));
    }

    #[test]
    fn rights_parse() {
        assert_eq!(
            Right::parse_list("browse,enqueue,browse").unwrap(),
            [Right::Enqueue, Right::Browse]
        );
        let e = Right::parse_list("enqueue,read").unwrap_err();
        assert!(e.message.contains("Right: 'read' is invalid"), "{e}");
        assert!(Right::parse_list("").is_err());
        assert!(Right::parse_list("enqueue,").is_err());
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::parse("*").unwrap(), Scope::everywhere());
        assert_eq!(Scope::parse("QS/*").unwrap(), Scope::parse("QS").unwrap());
        let s = Scope::parse("QS/RES*").unwrap();
        assert!(s.covers(&Place::Queue("QS".into(), "RESULTS".into())));
        assert!(!s.covers(&Place::Space("QS".into())));
        assert!(!s.covers(&Place::Daemon));
        assert!(s.touches("QS"));
        assert!(Scope::parse("Q*").unwrap().covers(&Place::Space("QS".into())));
        assert!(!Scope::parse("Q*").unwrap().covers(&Place::Daemon));
        for bad in ["", "/Q", "QS/", "a b", "QS/x,y", "0123456789abcdefg"] {
            let e = Scope::parse(bad).unwrap_err();
            assert!(e.message.starts_with("Scope: '"), "{bad}: {e}");
        }
    }

    #[test]
    fn anonymous_gets_admin_only_by_name() {
        let anon = Principal::anonymous();
        let everyone = Grant::parse("*", "admin,enqueue", None).unwrap();
        assert!(!everyone.allows(&anon, Right::Admin, &Place::Daemon));
        assert!(!everyone.allows(&anon, Right::Browse, &Place::Daemon), "not through admin either");
        assert!(everyone.allows(&anon, Right::Enqueue, &Place::Space("QS".into())));
        assert!(everyone.allows(&p("unix:bob"), Right::Admin, &Place::Daemon));
        let named = Grant::parse("anonymous", "admin", Some("QS")).unwrap();
        assert!(named.allows(&anon, Right::Dequeue, &Place::Queue("QS".into(), "Q".into())));
        assert!(!named.allows(&anon, Right::Admin, &Place::Daemon));
    }

    #[test]
    fn refusal_sentence() {
        let e = refusal(
            &p("cert:render-17"),
            Right::Dequeue,
            &Place::Queue("QS".into(), "RESULTS".into()),
        );
        assert_eq!(e.message, "QMEPERM: cert:render-17 may not dequeue from QS/RESULTS");
        assert_eq!(e.diagnostic, crate::Diagnostic::Perm);
    }

    #[test]
    fn bad_principals() {
        for bad in ["", "bob", "unix:", "unix:a b", "cert:\u{202e}x"] {
            let e = parse_principal(bad).unwrap_err();
            assert!(e.message.starts_with("Principal"), "{bad}: {e}");
        }
        assert_eq!(p("cert:*").as_str(), "cert:*");
    }

    #[test]
    fn grants_travel_as_text() {
        let g = Grant::parse("cert:render-*", "dequeue,browse", Some("QS/RESULTS")).unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(
            json,
            r#"{"principal":"cert:render-*","rights":["dequeue","browse"],"scope":"QS/RESULTS"}"#
        );
        assert_eq!(serde_json::from_str::<Grant>(&json).unwrap(), g);
    }
}
