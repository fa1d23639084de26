//! The smaller defects of issues #13 and #18: bad arguments, panics,
//! control characters, disk-full messages, locks, knobs.

mod common;
use common::*;

/// `--user` ids that are not ids ((uid_t)-1 means "no change" to
/// setresuid, so it ran the command as root), `--env =x` and host names
/// that are not host names are refused when the arguments are parsed:
/// exit 2, the value named, nothing fetched.
#[test]
fn invalid_user_env_and_hostname_values_are_refused_before_anything_happens() {
    // Nothing listens here: a fetch attempt would show up as an HTTP error.
    let env = Env::new("http://127.0.0.1:9/");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--user", "4294967295"],
            "UID 4294967295 is not a valid id",
        ),
        (
            &["--user", "65534:4294967295"],
            "GID 4294967295 is not a valid id",
        ),
        (&["--user", "99999999999"], "is not a valid id"),
        (&["--env", "=x"], "variable name is empty"),
        (&["--env", "NOEQUALS"], "not K=V"),
        (&["--hostname", "a\nb"], "host name"),
        (&["--hostname", "has space"], "host name"),
        (&["--hostname", "\x1b]0;pwned\x07"], "host name"),
        (&["--hostname", &"a".repeat(65)], "host name"),
    ];
    for (args, want) in cases {
        let mut full = vec!["run", "aarch64"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--", "id"]);
        let o = env.run(&full);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?} accepted: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !env.home().join("rootfs").exists() && !env.home().join("cache").exists(),
            "{args:?}: something was fetched before the arguments were checked"
        );
    }
}
