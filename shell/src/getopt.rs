//! Dash options before the positional arguments, as Tuxedo's commands take them:
//! `-y`, combined `-fy`, and options with a value (`-n 100B` or `-n100B`). `--json`
//! may appear anywhere and asks for JSON output.

use std::collections::BTreeMap;

/// The parsed arguments of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    flags: BTreeMap<char, Option<String>>,
    pub positionals: Vec<String>,
    pub json: bool,
    /// `--once`: one view rather than a live one (qstat).
    pub once: bool,
}

impl Args {
    pub fn flag(&self, c: char) -> bool {
        self.flags.contains_key(&c)
    }

    pub fn value(&self, c: char) -> Option<&str> {
        self.flags.get(&c).and_then(|v| v.as_deref())
    }
}

/// Parses `words` against `spec`: each letter is an option, a letter followed by `:` takes
/// a value. Returns an error naming the offending option: unknown, missing its value, or
/// given more than once.
pub fn parse(words: &[String], spec: &str) -> Result<Args, String> {
    let mut args = Args::default();
    let mut words = words.iter().filter(|w| {
        let (json, once) = (*w == "--json", *w == "--once");
        args.json |= json;
        args.once |= once;
        !(json || once)
    });
    let mut options_done = false;
    while let Some(word) = words.next() {
        if options_done || !word.starts_with('-') || word.len() < 2 {
            args.positionals.push(word.clone());
            options_done = true;
            continue;
        }
        if word == "--" {
            options_done = true;
            continue;
        }
        for (i, c) in word[1..].char_indices() {
            // ':' marks a value in the spec; it is no option itself.
            let Some(pos) = spec.find(c).filter(|_| c != ':') else {
                return Err(format!("invalid option -{c}"));
            };
            // Keeping one of two values silently would run something not asked for.
            if args.flags.contains_key(&c) {
                return Err(format!("option -{c} is given more than once"));
            }
            if spec[pos + c.len_utf8()..].starts_with(':') {
                let attached = &word[1 + i + c.len_utf8()..];
                let value = if attached.is_empty() {
                    words.next().cloned().ok_or_else(|| format!("option -{c} needs a value"))?
                } else {
                    attached.to_string()
                };
                args.flags.insert(c, Some(value));
                break;
            }
            args.flags.insert(c, None);
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options() {
        let a = parse(&w("-fy QS"), "fy").unwrap();
        assert!(a.flag('f') && a.flag('y'));
        assert_eq!(a.positionals, vec!["QS"]);
        let a = parse(&w("-n 100B -A3 QS 1 --json"), "A:n:o:").unwrap();
        assert_eq!(a.value('n'), Some("100B"));
        assert_eq!(a.value('A'), Some("3"));
        assert!(a.json);
        assert!(parse(&w("-x"), "fy").unwrap_err().contains("-x"));
        assert_eq!(parse(&w("-:"), "t:").unwrap_err(), "invalid option -:");
        assert!(parse(&w("-n"), "n:").is_err());
        assert_eq!(parse(&w("-- -y"), "y").unwrap().positionals, vec!["-y"]);
        for twice in ["-p 10 -p 20", "-p10 -p20", "-y -y", "-yy", "-y -fy"] {
            let e = parse(&w(twice), "fyp:").unwrap_err();
            assert!(e.contains("more than once") && e.contains('-'), "{twice}: {e}");
        }
        assert_eq!(parse(&w("-p 10 -p20"), "p:").unwrap_err(), "option -p is given more than once");
    }
}
