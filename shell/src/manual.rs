//! How `help` explains a command: its usage line, the explanation, its options and arguments
//! as a list (one entry each), and an example.
//!
//! Piped, the explanation and every list entry are one line each, so that a script can search
//! them. At a terminal they wrap at word boundaries to its width, list entries with a hanging
//! indent under their meaning. The usage line and the example are command lines: never broken.

use crate::catalog::CommandSpec;

/// The explanation's indent.
const PARAGRAPH: usize = 4;
/// A list entry's indent.
const ENTRY: usize = 6;
/// Where the meanings of a list start at most: a longer name puts its meaning on the next
/// line at a terminal, rather than squeezing every meaning into a narrow column.
const NAME_COLUMN_MAX: usize = 22;

/// `help CMD` for standard output: wrapped when it is a terminal.
pub fn describe(spec: &CommandSpec) -> String {
    describe_at(spec, crate::render::terminal_width())
}

/// `help CMD` at a terminal `width` columns wide, or piped (`None`).
pub fn describe_at(spec: &CommandSpec, width: Option<usize>) -> String {
    let mut out = format!("{}\n{}\n", spec.usage(), paragraph(spec.help, width));
    let column = spec
        .arguments
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0)
        .min(NAME_COLUMN_MAX);
    let (options, operands) = spec.option_and_operand_entries();
    for (title, list) in [("Options:", options), ("Arguments:", operands)] {
        if list.is_empty() {
            continue;
        }
        out += &format!("{:PARAGRAPH$}{title}\n", "");
        for (name, meaning) in list {
            out += &entry(name, meaning, column, width);
        }
    }
    out += &format!("{:PARAGRAPH$}Example:\n{:ENTRY$}{}\n", "", "", spec.example);
    out
}

/// A paragraph indented by four blanks, wrapped at a terminal.
pub fn paragraph(text: &str, width: Option<usize>) -> String {
    let pad = " ".repeat(PARAGRAPH);
    match width {
        None => format!("{pad}{text}"),
        Some(width) => wrap(text, PARAGRAPH, width)
            .iter()
            .map(|l| format!("{pad}{l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// One list entry: the name, then its meaning from `column` on.
fn entry(name: &str, meaning: &str, column: usize, width: Option<usize>) -> String {
    let pad = " ".repeat(ENTRY);
    let Some(width) = width else { return format!("{pad}{name:<column$}  {meaning}\n") };
    let hang = ENTRY + column + 2;
    let lines = wrap(meaning, hang, width);
    let indent = " ".repeat(hang);
    let mut out = if name.chars().count() > column {
        format!("{pad}{name}\n{indent}{}\n", lines[0])
    } else {
        format!("{pad}{name:<column$}  {}\n", lines[0])
    };
    for line in &lines[1..] {
        out += &format!("{indent}{line}\n");
    }
    out
}

/// `text` cut at word boundaries into lines that fit a terminal `width` wide after `indent`
/// columns (one column spare, so that a full line does not wrap by itself); never empty.
fn wrap(text: &str, indent: usize, width: usize) -> Vec<String> {
    let room = width.saturating_sub(indent + 1).max(20);
    let wrapped = tabled::settings::width::Wrap::wrap(text, room, true);
    // The blank a line was cut at may start the next one.
    let lines: Vec<String> = wrapped.lines().map(|l| l.trim().to_string()).collect();
    if lines.is_empty() { vec![String::new()] } else { lines }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::lookup;

    #[test]
    fn piped_entries_are_one_line_each() {
        let spec = lookup("qenqueue").unwrap();
        let text = describe_at(spec, None);
        for (name, meaning) in spec.arguments {
            let line = text.lines().find(|l| l.trim_start().starts_with(name)).unwrap();
            assert!(line.ends_with(meaning), "{line:?}");
        }
        assert!(text.contains("    Options:\n      -p priority "));
        assert!(text.contains("    Arguments:\n      queue_name "));
        assert!(text.ends_with("    Example:\n      qenqueue -p 80 SVCQ 'hello world'\n"));
    }

    /// Where meanings start when some name is as wide as the name column or wider.
    const HANG: usize = ENTRY + NAME_COLUMN_MAX + 2;

    #[test]
    fn at_a_terminal_entries_wrap_under_their_meaning() {
        let spec = lookup("qspacecreate").unwrap();
        let text = describe_at(spec, Some(60));
        let mut lines = text.lines().skip(1); // the usage line is a command line: never cut
        assert!(lines.all(|l| l.chars().count() <= 59 || l.trim_start() == spec.example));
        let blocks = text.split("      -n nonpersistent_msg_memory[b,B]\n").nth(1).unwrap();
        let meaning: Vec<&str> =
            blocks.lines().take_while(|l| l.starts_with(&" ".repeat(HANG))).collect();
        assert!(meaning.len() > 1, "{text}");
        // Every line starts at the paragraph, the list, or the hanging indent: none at a blank
        // left over where a line was cut.
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            assert!([0, PARAGRAPH, ENTRY, HANG].contains(&indent), "{line:?}");
        }
        let words: Vec<&str> = meaning.iter().flat_map(|l| l.split_whitespace()).collect();
        let (_, expected) = spec.arguments.iter().find(|(n, _)| n.starts_with("-n")).unwrap();
        assert_eq!(words.join(" "), *expected);
    }
}
