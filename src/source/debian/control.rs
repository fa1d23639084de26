//! Debian control files (deb822): paragraphs of `Field: value` lines, a
//! value continued on lines that start with a space or tab, paragraphs
//! separated by blank lines. `Release` and `Packages` are both in this
//! format; fields are looked up case-insensitively, as dpkg does.

/// One paragraph, borrowing from the text it was parsed from.
#[derive(Debug, Default, Clone)]
pub struct Paragraph<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    /// The raw value of `name` (first line trimmed; continuation lines kept
    /// with their newlines), if present.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Splits `text` into paragraphs. Lines that are neither a field nor a
/// continuation (PGP armor, comments) are ignored: the caller verified
/// what it parses, and unknown lines carry nothing we use.
pub fn paragraphs<'a>(text: &'a str) -> Vec<Paragraph<'a>> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    // (name, start of value in `text`, end of value)
    let mut open: Option<(&'a str, usize, usize)> = None;
    let base = text.as_ptr() as usize;
    let close = |cur: &mut Paragraph<'a>, open: &mut Option<(&'a str, usize, usize)>| {
        if let Some((n, s, e)) = open.take() {
            cur.fields.push((n, text[s..e].trim()));
        }
    };
    for line in text.split('\n') {
        let line_start = line.as_ptr() as usize - base;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            close(&mut cur, &mut open);
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, _, e)) = open.as_mut() {
                *e = line_start + line.len();
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        close(&mut cur, &mut open);
        if let Some((name, _)) = line.split_once(':') {
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                let s = line_start + name.len() + 1;
                open = Some((name, s, line_start + line.len()));
            }
        }
    }
    close(&mut cur, &mut open);
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_continuations_and_paragraphs() {
        let t = "Package: a\nDescription: one\n two\n\nPackage: b\r\nversion: 1\r\n\n\n";
        let p = paragraphs(t);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("package"), Some("a"));
        assert_eq!(p[0].get("Description"), Some("one\n two"));
        assert_eq!(p[1].get("Version"), Some("1"));
        assert_eq!(p[1].get("Missing"), None);
    }
}
