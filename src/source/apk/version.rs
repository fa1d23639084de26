//! apk's version ordering and dependency constraints (apk-tools'
//! `version.c`): `1.2.3a_rc1_p2-r4` compares number by number, then the
//! letter, then suffixes (`_alpha` < `_beta` < `_pre` < `_rc` < none <
//! `_cvs` < `_svn` < `_git` < `_hg` < `_p`), then the `-rN` revision.

use std::cmp::Ordering;

#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Num(&'a str),
    Letter(u8),
    Suffix(i8, &'a str),
    Hash(&'a str),
    Revision(u64),
}

fn suffix_rank(s: &str) -> Option<i8> {
    Some(match s {
        "alpha" => -4,
        "beta" => -3,
        "pre" => -2,
        "rc" => -1,
        "cvs" => 1,
        "svn" => 2,
        "git" => 3,
        "hg" => 4,
        "p" => 5,
        _ => return None,
    })
}

/// Splits a version into tokens; `None` if it is not a valid apk version.
fn tokens(v: &str) -> Option<Vec<Token<'_>>> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let digits = |i: usize| {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let j = digits(0);
    if j == 0 {
        return None;
    }
    out.push(Token::Num(&v[..j]));
    let mut i = j;
    while i < b.len() && b[i] == b'.' {
        let j = digits(i + 1);
        if j == i + 1 {
            return None;
        }
        out.push(Token::Num(&v[i + 1..j]));
        i = j;
    }
    if i < b.len() && b[i].is_ascii_lowercase() {
        out.push(Token::Letter(b[i]));
        i += 1;
    }
    while i < b.len() && b[i] == b'_' {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_lowercase() {
            j += 1;
        }
        let rank = suffix_rank(&v[start..j])?;
        let k = digits(j);
        out.push(Token::Suffix(rank, &v[j..k]));
        i = k;
    }
    if i < b.len() && b[i] == b'~' {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        out.push(Token::Hash(&v[start..j]));
        i = j;
    }
    if i + 1 < b.len() && b[i] == b'-' && b[i + 1] == b'r' {
        let j = digits(i + 2);
        if j == i + 2 {
            return None;
        }
        out.push(Token::Revision(v[i + 2..j].parse().ok()?));
        i = j;
    }
    (i == b.len()).then_some(out)
}

fn cmp_num(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Orders two versions as apk does. Invalid versions compare as strings
/// after every valid one (apk treats them as "unknown").
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ta, tb) = match (tokens(a), tokens(b)) {
        (Some(x), Some(y)) => (x, y),
        (None, None) => return a.cmp(b),
        (Some(_), None) => return Ordering::Less,
        (None, Some(_)) => return Ordering::Greater,
    };
    let mut i = 0;
    loop {
        match (ta.get(i), tb.get(i)) {
            (None, None) => return Ordering::Equal,
            (Some(x), Some(y)) => {
                let o = match (x, y) {
                    (Token::Num(p), Token::Num(q)) => cmp_num(p, q),
                    (Token::Letter(p), Token::Letter(q)) => p.cmp(q),
                    (Token::Suffix(r, p), Token::Suffix(s, q)) => {
                        r.cmp(s).then_with(|| cmp_num(p, q))
                    }
                    (Token::Hash(p), Token::Hash(q)) => p.cmp(q),
                    (Token::Revision(p), Token::Revision(q)) => p.cmp(q),
                    // Different kinds at the same place: the one that
                    // goes on with more numbers is newer, a pre-release
                    // suffix is older than anything, any other extra
                    // token makes it newer.
                    _ => return kind_order(x).cmp(&kind_order(y)),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            (Some(x), None) => return extra(x),
            (None, Some(y)) => return extra(y).reverse(),
        }
        i += 1;
    }
}

/// Rank of a token kind when two versions differ in kind at one place.
fn kind_order(t: &Token) -> i8 {
    match t {
        Token::Suffix(r, _) if *r < 0 => 0,
        Token::Revision(_) => 1,
        Token::Hash(_) => 2,
        Token::Suffix(..) => 3,
        Token::Letter(_) => 4,
        Token::Num(_) => 5,
    }
}

/// A version with one more token than the other, equal up to there.
fn extra(t: &Token) -> Ordering {
    match t {
        Token::Suffix(r, _) if *r < 0 => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// Whether `v` is a valid apk version.
#[cfg(test)]
pub fn valid(v: &str) -> bool {
    tokens(v).is_some()
}

/// A version operator of a dependency (`=`, `<`, `>=`, `~`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub less: bool,
    pub equal: bool,
    pub greater: bool,
    /// `~`: fuzzy, matches any version that starts with the given one.
    pub fuzzy: bool,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        let mut op = Op {
            less: false,
            equal: false,
            greater: false,
            fuzzy: false,
        };
        for c in s.chars() {
            match c {
                '<' => op.less = true,
                '>' => op.greater = true,
                '=' => op.equal = true,
                '~' => {
                    op.fuzzy = true;
                    op.equal = true
                }
                _ => return None,
            }
        }
        Some(op)
    }

    /// Does version `have` satisfy `self want`?
    pub fn matches(&self, have: &str, want: &str) -> bool {
        if self.fuzzy {
            let rest = have.strip_prefix(want);
            if rest.is_some_and(|r| r.is_empty() || !r.as_bytes()[0].is_ascii_digit()) {
                return true;
            }
        }
        match compare(have, want) {
            Ordering::Less => self.less,
            Ordering::Equal => self.equal,
            Ordering::Greater => self.greater,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fuzzy {
            return f.write_str("~");
        }
        let mut s = String::new();
        if self.less {
            s.push('<');
        }
        if self.greater {
            s.push('>');
        }
        if self.equal {
            s.push('=');
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apk_ordering() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.10", "1.9", Greater),
            ("1.0-r1", "1.0-r0", Greater),
            ("1.0-r10", "1.0-r9", Greater),
            ("1.0_rc1", "1.0", Less),
            ("1.0_alpha", "1.0_beta", Less),
            ("1.0_p1", "1.0", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0b", Less),
            ("1.36.1-r29", "1.36.1-r3", Greater),
            ("2.14.4-r0", "2.14.10-r0", Less),
            ("3.6.5-r0", "3.6.5-r0", Equal),
            ("1.0_git20240101", "1.0", Greater),
            ("1.0_rc1-r1", "1.0_rc2-r0", Less),
            ("20240226-r0", "20230506-r0", Greater),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
        assert!(valid("1.2.3_rc1_p2-r4"));
        assert!(!valid("abc"));
        assert!(!valid("1.0-"));
    }

    #[test]
    fn operators() {
        let ge = Op::parse(">=").unwrap();
        assert!(ge.matches("1.2", "1.2") && ge.matches("1.3", "1.2") && !ge.matches("1.1", "1.2"));
        let lt = Op::parse("<").unwrap();
        assert!(lt.matches("1.1", "1.2") && !lt.matches("1.2", "1.2"));
        let fz = Op::parse("~").unwrap();
        assert!(fz.matches("1.2.3-r0", "1.2") && !fz.matches("1.20", "1.2"));
        assert!(Op::parse("=!").is_none());
    }
}
