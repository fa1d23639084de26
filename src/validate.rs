//! Checks of single command-line values, run by clap as `value_parser`s
//! (so a bad value is refused before anything is fetched or created, with
//! clap's usual "invalid value" message and exit status 2). Pure functions,
//! unit-tested here; what the values mean is decided in `commands`.

/// `--user NAME|UID[:GID]`: see [`crate::sandbox::user::parse`].
pub fn user(arg: &str) -> Result<String, String> {
    crate::sandbox::user::parse(arg).map(|_| arg.to_string())
}

/// `--env K=V`: a non-empty name without `=` or NUL, then `=`.
pub fn env(arg: &str) -> Result<String, String> {
    match arg.split_once('=') {
        None => Err("not K=V: write it as --env NAME=value".into()),
        Some(("", _)) => Err("the variable name is empty: write it as --env NAME=value".into()),
        Some(_) if arg.contains('\0') => Err("contains a NUL byte".into()),
        Some(_) => Ok(arg.to_string()),
    }
}

/// `--hostname`: a valid host name (RFC 1123): at most 64 bytes (the
/// kernel's limit), dot-separated labels of 1-63 letters, digits and `-`,
/// not starting or ending with `-`. Anything else (a newline, a space, a
/// control character) would reach prompts and logs inside the guest.
pub fn hostname(arg: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{why}: a host name is letters, digits, '-' and '.', at most 64 bytes, e.g. build-1"
        ))
    };
    if arg.is_empty() {
        return bad("empty");
    }
    if arg.len() > 64 {
        return bad("too long");
    }
    for label in arg.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("an empty or too long label");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("invalid character");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with '-'");
        }
    }
    Ok(arg.to_string())
}

/// `--sha256`: 64 hex digits (either case), returned lowercase.
pub fn sha256(arg: &str) -> Result<String, String> {
    let a = arg.trim();
    if a.len() != 64 || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "not a sha256 digest: it has 64 hex digits (this has {} characters); `sha256sum FILE` prints it",
            a.chars().count()
        ));
    }
    Ok(a.to_ascii_lowercase())
}

/// `--from URL|FILE`: an `http(s)://` URL with a host, or a file that
/// exists (a path, or `file://PATH`), so that a typo is reported before
/// anything else happens (also when the arch is already installed).
pub fn from(arg: &str) -> Result<String, String> {
    // A container image: its reference is checked by its own parser.
    if crate::source::oci::is_image(arg) {
        return crate::source::oci::ImageRef::parse(arg).map(|_| arg.to_string());
    }
    match crate::fetch::transport::local_path(arg) {
        Some(p) => match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => Err(format!(
                "{} is a directory: give a tarball (run a tree in place with `xroot run --rootfs DIR`)",
                p.display()
            )),
            Ok(_) => Ok(arg.to_string()),
            Err(e) => Err(format!("{}: {e}", p.display())),
        },
        None => match url::Url::parse(arg) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                Ok(arg.to_string())
            }
            Ok(u) => Err(format!(
                "unsupported URL scheme {:?}: use http://, https://, file://, a path, or an image (docker://, oci:, oci-archive:, docker-archive:)",
                u.scheme()
            )),
            Err(e) => Err(format!("not a valid URL: {e}")),
        },
    }
}

/// `--timeout` / `XROOT_TIMEOUT`: a positive number of seconds.
pub fn seconds(arg: &str) -> Result<f64, String> {
    match arg.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(
            "not a number of seconds above 0 (--timeout or XROOT_TIMEOUT), e.g. 30 or 2.5".into(),
        ),
    }
}

/// `--retries` / `XROOT_RETRIES`: a whole number of attempts, at least 1.
pub fn attempts(arg: &str) -> Result<u32, String> {
    match arg.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => {
            Err("not a number of attempts of 1 or more (--retries or XROOT_RETRIES), e.g. 3".into())
        }
    }
}

/// `--max-size` / `XROOT_MAX_UNPACKED`: a whole number of bytes, above 0.
pub fn bytes(arg: &str) -> Result<u64, String> {
    match arg.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => {
            Err("not a number of bytes (--max-size or XROOT_MAX_UNPACKED), e.g. 8589934592".into())
        }
    }
}

/// An on/off knob: `1` or `0` (also true/false, yes/no, on/off).
pub fn switch(arg: &str) -> Result<bool, String> {
    match arg.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not 1 or 0 (--qemu-prelink or XROOT_QEMU_PRELINK)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_needs_a_name() {
        assert!(env("A=b").is_ok());
        assert!(env("A=").is_ok());
        assert!(env("A=b=c").is_ok());
        assert!(env("=x").is_err());
        assert!(env("=").is_err());
        assert!(env("AB").is_err());
        assert!(env("A=\0").is_err());
    }

    #[test]
    fn hostnames_are_rfc1123() {
        for ok in [
            "a",
            "xroot-aarch64",
            "build.example.org",
            "1x",
            &"a".repeat(63),
        ] {
            assert!(hostname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a\nb",
            "a b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a_b",
            "\x1b]0;x\x07",
            &"a".repeat(65),
            &format!("{}.{}", "a".repeat(40), "b".repeat(40)),
        ] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn knobs() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        for bad in ["abc", "-1", "0", "nan", "inf", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(attempts("1"), Ok(1));
        for bad in ["-1", "0", "x", "1.5"] {
            assert!(attempts(bad).is_err(), "{bad}");
        }
        assert_eq!(bytes("1024"), Ok(1024));
        assert!(bytes("abc").is_err() && bytes("0").is_err() && bytes("-5").is_err());
        assert_eq!(switch("0"), Ok(false));
        assert_eq!(switch("1"), Ok(true));
        assert!(switch("maybe").is_err());
    }

    #[test]
    fn sha256_and_from() {
        let h = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(sha256(h).unwrap(), h.to_ascii_lowercase());
        for bad in ["", "abc", &h[1..], &format!("{h}0"), &h.replace('a', "g")] {
            assert!(sha256(bad).is_err(), "{bad}");
        }
        assert!(from("/etc/hostname").is_ok());
        assert!(from("file:///etc/hostname").is_ok());
        assert!(from("https://example.org/a.tar.gz").is_ok());
        for bad in [
            "/nonexistent.tar",
            "/etc",
            "ftp://example.org/x",
            "http://",
            "gopher://x/y",
        ] {
            assert!(from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids_are_valid_ids() {
        assert!(user("4294967295").is_err());
        assert!(user("65534:4294967295").is_err());
        assert!(user("65534:65534").is_ok());
        assert!(user("alice").is_ok());
    }
}
