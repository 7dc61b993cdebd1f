//! How answers are printed: lists as a table (or their JSON), single objects as JSON (or a
//! two-column table). Only answers go to stdout; notes go to stderr.

use serde_json::Value;

use crate::args::Format;

/// Where answers and notes go.
pub(crate) struct Out {
    /// `--output`, when given.
    pub(crate) format: Option<Format>,
    /// `--quiet`: no notes, only answers and errors.
    pub(crate) quiet: bool,
}

impl Out {
    /// A note for a person at the terminal (stderr), unless quiet.
    pub(crate) fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// Prints one object.
    pub(crate) fn object(&self, v: &Value) {
        object(self.format, v);
    }

    /// Prints a `{items, next_cursor}` page; `columns` are the item fields a table shows.
    pub(crate) fn list(&self, page: &Value, columns: &[&str]) {
        list(self.format, page, columns);
        if let (Some(cursor), Some(Format::Table) | None) = (page["next_cursor"].as_str(), self.format) {
            self.note(&format!("more: --cursor {cursor}"));
        }
    }
}

fn object(format: Option<Format>, v: &Value) {
    match format.unwrap_or(Format::Json) {
        Format::Json => json(v),
        Format::Table => {
            let rows: Vec<Vec<String>> = match v.as_object() {
                Some(map) => map.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect(),
                None => vec![vec![cell(v)]],
            };
            table(&[], &rows);
        }
    }
}

fn list(format: Option<Format>, page: &Value, columns: &[&str]) {
    match format.unwrap_or(Format::Table) {
        Format::Json => json(page),
        Format::Table => {
            let items = page["items"].as_array().map(Vec::as_slice).unwrap_or_default();
            let rows: Vec<Vec<String>> = items.iter().map(|it| columns.iter().map(|c| cell(&it[*c])).collect()).collect();
            table(columns, &rows);
        }
    }
}

fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

/// Columns padded to their widest cell (in characters), two spaces apart; an upper-case header line
/// when `header` is not empty.
fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let all = (!head.is_empty()).then_some(&head).into_iter().chain(rows);
    let mut widths: Vec<usize> = Vec::new();
    for row in all.clone() {
        for (i, c) in row.iter().enumerate() {
            let w = c.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in all {
        let line: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_table_pads_each_column_to_its_widest_cell() {
        let rows = vec![vec!["z1".to_owned(), cell(&json!("démo"))], vec!["zone-22".to_owned(), cell(&json!(null))]];
        assert_eq!(render_table(&["id", "name"], &rows), "ID       NAME\nz1       démo\nzone-22  -\n");
    }

    #[test]
    fn cells_show_strings_bare_and_everything_else_as_json() {
        assert_eq!(cell(&json!("a")), "a");
        assert_eq!(cell(&json!(["x", 1])), r#"["x",1]"#);
        assert_eq!(cell(&json!(false)), "false");
    }
}
