//! Laying a listing out for where it goes. Piped, a table keeps every column at its natural
//! width, so scripts see the same layout whatever terminal ran them. At a terminal it fits
//! the width: columns empty in every row are left out, then text columns (those whose cells
//! hold words) are wrapped at word boundaries, widest first; ids, numbers and headers are
//! never cut. When even that is too wide, each row becomes a block of `name  value` lines.
//! Numbers are right-aligned and no line ends in blanks, wherever the output goes.

use tabled::builder::Builder;
use tabled::grid::util::string::get_text_width;
use tabled::settings::object::Columns;
use tabled::settings::width::Wrap;
use tabled::settings::{Alignment, Modify, Style};

/// Width of `| ` / ` |` between and around columns in the psql style: one blank each side
/// of every cell, one bar between cells.
fn overhead(columns: usize) -> usize {
    3 * columns.saturating_sub(1) + 2
}

/// A cell a person reads as "nothing here".
fn is_empty(cell: &str) -> bool {
    cell.is_empty() || cell == "-"
}

/// A count, size or duration: right-aligned and never wrapped. Digits with leading zeros
/// are an id (a msgid), left-aligned like other ids.
fn is_number(cell: &str) -> bool {
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let digits = digits.strip_suffix('%').unwrap_or(digits);
    let padded = digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.");
    !digits.is_empty()
        && !padded
        && digits.matches('.').count() <= 1
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().next().is_some_and(|c| c.is_ascii_digit())
}

/// Text is wrapped no narrower than this: below it a column reads worse than a block of
/// `name  value` lines, and short values (times, options) keep their line.
const NARROWEST_WRAP: usize = 20;

/// What a column holds, learned from its cells.
struct Column {
    header: String,
    cells: Vec<String>,
    numeric: bool,
    /// Its cells hold several words, so it may wrap.
    text: bool,
    natural: usize,
    /// The narrowest it may become: its header, its longest word, [`NARROWEST_WRAP`].
    least: usize,
}

impl Column {
    fn new(header: String, cells: Vec<String>) -> Column {
        let numeric =
            cells.iter().any(|c| is_number(c)) && cells.iter().all(|c| is_empty(c) || is_number(c));
        let text = !numeric && cells.iter().any(|c| c.trim().contains(char::is_whitespace));
        let natural =
            cells.iter().map(|c| get_text_width(c)).chain([get_text_width(&header)]).max();
        let natural = natural.unwrap_or(0);
        let least = if text {
            let longest_word = cells
                .iter()
                .flat_map(|c| c.split_whitespace())
                .map(get_text_width)
                .max()
                .unwrap_or(0);
            longest_word.max(get_text_width(&header)).max(natural.min(NARROWEST_WRAP))
        } else {
            natural
        };
        Column { header, cells, numeric, text, natural, least }
    }

    fn empty(&self) -> bool {
        !self.cells.is_empty() && self.cells.iter().all(|c| is_empty(c))
    }
}

/// Lays `rows` under `header` out for a terminal `width` columns wide, or for a pipe (`None`).
pub fn layout(header: Vec<String>, rows: Vec<Vec<String>>, width: Option<usize>) -> String {
    let mut columns = into_columns(header, rows);
    let Some(width) = width else { return render(&columns, None) };
    if fits(&columns, width, |c| c.natural) {
        return render(&columns, None);
    }
    let dropped: Vec<String> =
        columns.iter().filter(|c| c.empty()).map(|c| c.header.clone()).collect();
    columns.retain(|c| !c.empty());
    let note = (!dropped.is_empty())
        .then(|| wrap(&format!("(empty in every row, not shown: {})", dropped.join(", ")), width));
    let out = if fits(&columns, width, |c| c.least) {
        render(&columns, Some(shrink(&columns, width)))
    } else {
        blocks(&columns, width)
    };
    match note {
        Some(note) => format!("{out}\n{note}"),
        None => out,
    }
}

fn into_columns(header: Vec<String>, rows: Vec<Vec<String>>) -> Vec<Column> {
    let mut cells: Vec<Vec<String>> = vec![Vec::with_capacity(rows.len()); header.len()];
    for row in rows {
        for (i, cell) in row.into_iter().enumerate().take(header.len()) {
            cells[i].push(cell);
        }
    }
    header.into_iter().zip(cells).map(|(h, c)| Column::new(h, c)).collect()
}

fn fits(columns: &[Column], width: usize, each: impl Fn(&Column) -> usize) -> bool {
    columns.iter().map(each).sum::<usize>() + overhead(columns.len()) <= width
}

/// Column widths that fit `width`: the widest text column gives up a column of characters
/// at a time, so short text (times, states) keeps its line while long text wraps.
fn shrink(columns: &[Column], width: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.natural).collect();
    let budget = width.saturating_sub(overhead(columns.len()));
    while widths.iter().sum::<usize>() > budget {
        let widest = (0..columns.len())
            .filter(|&i| columns[i].text && widths[i] > columns[i].least)
            .max_by_key(|&i| widths[i]);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    widths
}

/// Wraps `cell` at word boundaries into lines of at most `width`, without trailing blanks.
fn wrap(cell: &str, width: usize) -> String {
    if get_text_width(cell) <= width {
        return cell.to_string();
    }
    let wrapped = Wrap::wrap(cell, width.max(1), true);
    wrapped.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

fn render(columns: &[Column], widths: Option<Vec<usize>>) -> String {
    let mut b = Builder::default();
    b.push_record(columns.iter().map(|c| c.header.clone()));
    let rows = columns.first().map_or(0, |c| c.cells.len());
    for r in 0..rows {
        b.push_record(columns.iter().enumerate().map(|(i, c)| match &widths {
            Some(w) if c.text => wrap(&c.cells[r], w[i]),
            _ => c.cells[r].clone(),
        }));
    }
    let mut table = b.build();
    table.with(Style::psql());
    for (i, c) in columns.iter().enumerate() {
        if c.numeric {
            table.with(Modify::new(Columns::one(i)).with(Alignment::right()));
        }
    }
    trim_lines(&table.to_string())
}

/// One block of `name  value` lines per row, blocks separated by a blank line: for records
/// too wide for any table.
fn blocks(columns: &[Column], width: usize) -> String {
    let key_width = columns.iter().map(|c| get_text_width(&c.header)).max().unwrap_or(0);
    let value_width = width.saturating_sub(key_width + 2).max(16);
    let rows = columns.first().map_or(0, |c| c.cells.len());
    let mut out = Vec::with_capacity(rows);
    for r in 0..rows {
        let mut block = String::new();
        for c in columns {
            let value = wrap(&c.cells[r], value_width);
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            block += format!("{:key_width$}  {first}", c.header).trim_end();
            block.push('\n');
            for more in lines {
                block += &format!("{:key_width$}  {more}\n", "");
            }
        }
        out.push(block);
    }
    out.join("\n").trim_end_matches('\n').to_string()
}

/// `text` without blanks at the end of its lines.
pub fn trim_lines(text: &str) -> String {
    text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    fn widest(text: &str) -> usize {
        text.lines().map(get_text_width).max().unwrap_or(0)
    }

    #[test]
    fn piped_tables_keep_natural_widths_right_align_numbers_and_end_lines_cleanly() {
        let out = layout(
            strings(&["queue", "messages", "command"]),
            vec![
                strings(&["Q1", "5", "a rather long command line here"]),
                strings(&["Q22", "12345", ""]),
            ],
            None,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], " Q1    |        5 | a rather long command line here");
        assert_eq!(lines[3], " Q22   |    12345 |");
        assert!(out.lines().all(|l| !l.ends_with(' ')), "{out}");
    }

    #[test]
    fn narrow_terminals_wrap_text_but_never_ids_numbers_or_headers() {
        let id = "0123456789abcdef0123456789abcdef";
        let out = layout(
            strings(&["msgid", "length", "last error"]),
            vec![strings(&[id, "1024", "the service exited with status 3 and wrote nothing"])],
            Some(70),
        );
        assert!(widest(&out) <= 70, "{out}");
        assert!(out.lines().next().unwrap().contains("| last error"), "not a table: {out}");
        assert!(out.contains(id) && out.contains("1024") && out.contains("last error"), "{out}");
        assert!(out.lines().count() > 3, "not wrapped: {out}");
        let words: Vec<&str> = out.split(|c: char| c.is_whitespace() || c == '|').collect();
        assert!(words.contains(&"service") && words.contains(&"nothing"), "a word was cut: {out}");
    }

    #[test]
    fn columns_empty_everywhere_are_left_out_when_too_wide() {
        let out = layout(
            strings(&["name", "reply queue", "failure queue", "note"]),
            vec![strings(&["A", "-", "", "some words that go on and on and on"])],
            Some(40),
        );
        assert!(widest(&out) <= 40, "{out}");
        assert!(!out.lines().next().unwrap().contains("reply queue"), "{out}");
        let note: Vec<&str> = out.lines().skip(4).flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(note.join(" "), "(empty in every row, not shown: reply queue, failure queue)");
    }

    #[test]
    fn records_too_wide_for_a_table_become_blocks() {
        let header = strings(&["queue", "order", "retries", "delay", "high/low", "command"]);
        let rows = vec![
            strings(&["QUEUE_NUMBER_ONE", "priority,fifo", "3", "10", "80%/20%", "echo x"]),
            strings(&["Q2", "fifo", "0", "0", "0/0", "-"]),
        ];
        let out = layout(header, rows, Some(30));
        assert!(widest(&out) <= 30, "{out}");
        assert!(out.starts_with("queue     QUEUE_NUMBER_ONE\norder     priority,fifo\n"), "{out}");
        assert!(out.contains("\n\nqueue     Q2\n"), "{out}");
    }

    #[test]
    fn msgids_are_ids_not_numbers() {
        assert!(is_number("0") && is_number("1024") && is_number("-3") && is_number("75%"));
        assert!(!is_number("0000000000000001") && !is_number("1.2.3") && !is_number("-"));
    }

    #[test]
    fn wide_terminals_change_nothing() {
        let header = strings(&["a", "b"]);
        let rows = vec![strings(&["x y z", "1"])];
        assert_eq!(layout(header.clone(), rows.clone(), Some(200)), layout(header, rows, None));
    }
}
