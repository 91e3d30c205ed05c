//! Making the outputs of the two backends comparable.
//!
//! The demos print everything that varies from run to run as a recognisable token, so this
//! can stay a small scanner instead of a pile of regular expressions:
//!
//! | printed                       | becomes  | why it varies                        |
//! |-------------------------------|----------|--------------------------------------|
//! | `pid=4242`, `thread=7`        | `<id>`   | which worker ran a task              |
//! | `<id>, <id>, <id>` (a list)   | `<id>`   | how many distinct workers took work  |
//! | `0.412s` (digits, dot, `s`)   | `<t>`    | timings                              |
//! | `1.93x` (digits, dot, `x`)    | `<x>`    | speedups                             |
//! | spaces before one of those    | one space | right-aligned to a width the value changes |
//! | `│████   │` (a bar)           | `│<bar>│`| a timing drawn as a bar              |
//! | a line starting `[process]`, `[thread]` or `[cluster]` | dropped | differs by the backend's nature (a thread shares the main pid) |

/// Normalises a demo's output for comparison across backends (see the module table).
///
/// # Examples
///
/// ```
/// use cf_demos::normalize;
///
/// let process = "Workers: {pid=11, pid=12}\n[process] pids differ: true\nseq 1.250s 1.00x\n";
/// let thread = "Workers: {thread=3}\n[thread] pids differ: false\nseq 1.190s 1.00x\n";
/// assert_eq!(normalize(process), normalize(thread));
/// assert_eq!(normalize(thread), "Workers: {<id>}\nseq <t> <x>\n");
/// ```
#[must_use]
pub fn normalize(output: &str) -> String {
    let mut normalized = String::with_capacity(output.len());
    for line in output.lines() {
        let trimmed = line.trim_start();
        if ["[process]", "[thread]", "[cluster]"]
            .iter()
            .any(|marker| trimmed.starts_with(marker))
        {
            continue;
        }
        normalized.push_str(&normalize_line(line));
        normalized.push('\n');
    }
    normalized
}

fn normalize_line(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !is_word(chars[i - 1]);
        if at_word_start {
            if let Some(len) = worker_token(&chars[i..]) {
                out.push_str("<id>");
                i += len;
                continue;
            }
            if let Some((len, unit)) = measured_number(&chars[i..]) {
                // A right-aligned number is padded to its column: the padding varies with the
                // value (` 1.052s`, `28.642s`), so any run of spaces before it becomes one.
                if out.ends_with(' ') {
                    out.truncate(out.trim_end_matches(' ').len());
                    out.push(' ');
                }
                out.push_str(if unit == 's' { "<t>" } else { "<x>" });
                i += len;
                continue;
            }
        }
        if chars[i] == '│' {
            if let Some(end) = chars[i + 1..].iter().position(|&c| c == '│') {
                out.push_str("│<bar>│");
                i += end + 2;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    collapse_lists(out)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

/// `pid=123` or `thread=123`, not followed by more word characters: its length.
fn worker_token(chars: &[char]) -> Option<usize> {
    for key in ["pid=", "thread="] {
        let key: Vec<char> = key.chars().collect();
        if chars.starts_with(&key) {
            let digits = chars[key.len()..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let end = key.len() + digits;
            if digits > 0 && !matches!(chars.get(end), Some(&c) if is_word(c)) {
                return Some(end);
            }
        }
    }
    None
}

/// `12.345s` or `1.93x`, not followed by more word characters: its length and unit.
fn measured_number(chars: &[char]) -> Option<(usize, char)> {
    let whole = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    if whole == 0 || chars.get(whole) != Some(&'.') {
        return None;
    }
    let fraction = chars[whole + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let unit_at = whole + 1 + fraction;
    let unit = *chars.get(unit_at)?;
    let ends = !matches!(chars.get(unit_at + 1), Some(&c) if c.is_alphanumeric() || c == '_');
    (fraction > 0 && (unit == 's' || unit == 'x') && ends).then_some((unit_at + 1, unit))
}

fn collapse_lists(mut line: String) -> String {
    while line.contains("<id>, <id>") {
        line = line.replace("<id>, <id>", "<id>");
    }
    line
}
