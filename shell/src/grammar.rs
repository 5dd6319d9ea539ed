//! The qmadmin line grammar, written with nom.
//!
//! A line is blank, a `#` comment, a `!command` shell escape, `!!` (repeat the last shell
//! escape) or a command: words separated by white space (any kind: a tab, a form feed or a
//! no-break space pasted from a document separates words as a blank does). A word may be
//! quoted with `"` or `'`; inside quotes a backslash makes the next quote or backslash
//! literal, and `""` is an empty word. A closing quote must be followed by white space or the
//! end of the line.

use nom::branch::alt;
use nom::bytes::complete::{is_not, take_while, take_while1};
use nom::character::complete::{anychar, char, satisfy};
use nom::combinator::{all_consuming, eof, map, peek, recognize, value};
use nom::multi::{fold_many0, separated_list0};
use nom::sequence::{delimited, preceded, terminated};
use nom::{IResult, Parser};

/// One parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Blank,
    Comment,
    /// `!command`: run it with the shell.
    Shell(String),
    /// `!!`: run the previous shell command again.
    ShellRepeat,
    Command {
        name: String,
        args: Vec<String>,
    },
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrammarError {
    UnmatchedQuote(char),
    NoSpaceAfterQuote,
}

impl std::fmt::Display for GrammarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrammarError::UnmatchedQuote('"') => f.write_str("No matching double quote"),
            GrammarError::UnmatchedQuote(_) => f.write_str("No matching single quote"),
            GrammarError::NoSpaceAfterQuote => {
                f.write_str("Must have white space following quoted string")
            }
        }
    }
}

/// The inside of a quoted word, with `\"`, `\'` and `\\` unescaped; other backslashes stay
/// (message ids use `\xx` hex escapes, decoded later).
fn quoted_body(quote: char) -> impl Fn(&str) -> IResult<&str, String> {
    move |input| {
        let stop: &str = if quote == '"' { "\"\\" } else { "'\\" };
        let escape = map(preceded(char('\\'), anychar), |c: char| match c {
            '"' | '\'' | '\\' => c.to_string(),
            other => format!("\\{other}"),
        });
        fold_many0(
            alt((map(is_not(stop), str::to_string), escape)),
            String::new,
            |mut acc, piece| {
                acc.push_str(&piece);
                acc
            },
        )
        .parse(input)
    }
}

/// White space between words: what ends a bare word also separates it from the next.
fn blanks(input: &str) -> IResult<&str, &str> {
    take_while1(char::is_whitespace).parse(input)
}

fn quoted(quote: char) -> impl Fn(&str) -> IResult<&str, String> {
    move |input| {
        terminated(
            delimited(char(quote), quoted_body(quote), char(quote)),
            peek(alt((value((), blanks), value((), eof)))),
        )
        .parse(input)
    }
}

/// An unquoted word; it may contain quotes, but not start with one.
fn bare(input: &str) -> IResult<&str, String> {
    let first = satisfy(|c: char| !c.is_whitespace() && c != '"' && c != '\'');
    map(recognize((first, take_while(|c: char| !c.is_whitespace()))), str::to_string).parse(input)
}

fn word(input: &str) -> IResult<&str, String> {
    alt((quoted('"'), quoted('\''), bare)).parse(input)
}

fn words(input: &str) -> IResult<&str, Vec<String>> {
    let edge = || take_while(char::is_whitespace);
    all_consuming(delimited(edge(), separated_list0(blanks, word), edge())).parse(input)
}

/// Finds what is wrong with a line `words` refused, for the error message.
fn diagnose(line: &str) -> GrammarError {
    let mut chars = line.chars().peekable();
    let mut at_word_start = true;
    while let Some(c) = chars.next() {
        if at_word_start && (c == '"' || c == '\'') {
            let mut closed = false;
            while let Some(d) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return GrammarError::UnmatchedQuote(c);
            }
            if chars.peek().is_some_and(|n| !n.is_whitespace()) {
                return GrammarError::NoSpaceAfterQuote;
            }
            at_word_start = false;
            continue;
        }
        at_word_start = c.is_whitespace();
    }
    GrammarError::NoSpaceAfterQuote
}

/// Parses one line of input.
pub fn parse_line(line: &str) -> Result<Line, GrammarError> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(Line::Blank);
    }
    if trimmed.starts_with('#') {
        return Ok(Line::Comment);
    }
    if let Some(rest) = trimmed.strip_prefix('!') {
        return Ok(if rest.trim() == "!" {
            Line::ShellRepeat
        } else {
            Line::Shell(rest.trim().to_string())
        });
    }
    match words(line) {
        Ok((_, mut words)) if !words.is_empty() => {
            let name = words.remove(0);
            Ok(Line::Command { name, args: words })
        }
        Ok(_) => Ok(Line::Blank),
        Err(_) => Err(diagnose(line)),
    }
}

/// Splits a `-c` script into lines at newlines and at `;` outside quotes.
pub fn split_script(script: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = script.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                current.push(c);
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (None, ';' | '\n') => lines.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    lines.push(current);
    lines.into_iter().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cmd(line: &str) -> (String, Vec<String>) {
        match parse_line(line).unwrap() {
            Line::Command { name, args } => (name, args),
            other => panic!("not a command: {other:?}"),
        }
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            cmd("crdl /tmp/q 0 100"),
            ("crdl".into(), vec!["/tmp/q".into(), "0".into(), "100".into()])
        );
        assert_eq!(cmd(r#"qcr ERR time none 0 0 100% 0% """#).1.last().unwrap(), "");
        assert_eq!(cmd("qcr ERR time none 0 0 100% 0% ''").1.last().unwrap(), "");
        assert_eq!(cmd("qspc Q 88945 200 20 5 5 200 Q_ERROR 'y' 16").1[8], "y");
        assert_eq!(cmd(r#"qcr q fifo none 0 0 80% 0% "mail \"me\" now""#).1[7], r#"mail "me" now"#);
        assert_eq!(cmd(r#"x "a\20b""#).1[0], r"a\20b");
        assert_eq!(cmd("  v  ").0, "v");
        // Any white space separates words, also after a quoted word.
        assert_eq!(cmd("qopen\u{a0}QS\u{b}").1, vec!["QS"]);
        assert_eq!(cmd("echo\u{c}'on'\t").1, vec!["on"]);
    }

    #[test]
    fn special_lines() {
        assert_eq!(parse_line("").unwrap(), Line::Blank);
        assert_eq!(parse_line("   ").unwrap(), Line::Blank);
        assert_eq!(parse_line("# hello").unwrap(), Line::Comment);
        assert_eq!(parse_line("!ls -l").unwrap(), Line::Shell("ls -l".into()));
        assert_eq!(parse_line("!!").unwrap(), Line::ShellRepeat);
    }

    #[test]
    fn quote_errors() {
        assert_eq!(parse_line(r#"echo "abc"#), Err(GrammarError::UnmatchedQuote('"')));
        assert_eq!(parse_line(r#"echo "abc"def"#), Err(GrammarError::NoSpaceAfterQuote));
        assert_eq!(parse_line("echo 'abc"), Err(GrammarError::UnmatchedQuote('\'')));
    }

    #[test]
    fn scripts() {
        assert_eq!(split_script("qopen QS; qinfo"), vec!["qopen QS", "qinfo"]);
        assert_eq!(split_script("a \"x;y\"; b\nc"), vec!["a \"x;y\"", "b", "c"]);
    }

    proptest! {
        #[test]
        fn never_panics(line in ".{0,80}") {
            let _ = parse_line(&line);
            let _ = split_script(&line);
        }

        /// Plain words come back exactly as they went in.
        #[test]
        fn plain_words_round_trip(words in prop::collection::vec("[a-zA-Z0-9/%._,-]{1,12}", 1..6)) {
            let line = words.join(" ");
            let (name, args) = cmd(&line);
            prop_assert_eq!(name, words[0].clone());
            prop_assert_eq!(args, words[1..].to_vec());
        }

        /// Any word survives quoting with escapes.
        #[test]
        fn quoted_words_round_trip(word in "[^\\\\\"]{0,20}") {
            let line = format!("echo \"{}\"", word);
            prop_assert_eq!(cmd(&line).1, vec![word]);
        }
    }
}
