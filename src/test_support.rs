//! Shared by the unit tests: a prerequisite that is missing fails the test
//! under CI (`CI=true`), and otherwise is a skip that shows in the output
//! (as `tests/common`'s `require` does for the integration tests).

/// Whether we run under CI, where missing prerequisites are failures.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `ok`, or: under CI a failure naming `what`; locally a visible notice
/// (written to stderr directly: libtest discards a passing test's
/// captured `eprintln!`) and false, so the caller skips that part.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(!ci(), "prerequisite missing under CI: {what}");
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (part of) {test} (not CI): {what}"
    );
    false
}
