//! The first link of apt's chain of trust: the suite's `InRelease` (or
//! `Release` + `Release.gpg`) is verified against an OpenPGP keyring that
//! xroot ships (or the user names), then parsed for the hashes of the
//! indexes. Only the signed text is ever parsed: anything around the
//! signed block of an `InRelease` file is ignored, as apt does since
//! CVE-2013-1051-like "text outside the signature" tricks.
//!
//! OpenPGP is rPGP (`pgp`), pure Rust: no C library, no gpg binary, and it
//! links statically like the rest of xroot.

use std::collections::HashMap;
use std::io::Cursor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::KeyDetails;

use super::control;
use crate::error::hinted;

/// How far a signature's or Release's date may be in the future (clock
/// skew), as apt's `Acquire::Max-FutureTime` (10 s) is too strict for VMs.
const FUTURE_SLACK: Duration = Duration::from_secs(24 * 3600);

/// A set of trusted public keys.
pub struct Keyring {
    /// What it is, for messages ("Debian archive keyring", a path).
    pub name: String,
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Parses a keyring: binary (`*.gpg`, as `/usr/share/keyrings` has
    /// them) or ASCII-armored (`*.asc`).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Keyring> {
        let bad = |e: String| {
            hinted(
                format!("{name} is not an OpenPGP keyring: {e}"),
                "give a keyring as apt uses them (binary .gpg or armored .asc)",
            )
        };
        let armored = bytes.starts_with(b"-----BEGIN");
        let keys: Vec<SignedPublicKey> = if armored {
            let (it, _) = SignedPublicKey::from_armor_many(Cursor::new(bytes))
                .map_err(|e| bad(e.to_string()))?;
            it.filter_map(|k| k.ok()).collect()
        } else {
            SignedPublicKey::from_bytes_many(Cursor::new(bytes))
                .map_err(|e| bad(e.to_string()))?
                .filter_map(|k| k.ok())
                .collect()
        };
        if keys.is_empty() {
            return Err(bad("it holds no public key".into()));
        }
        Ok(Keyring {
            name: name.to_string(),
            keys,
        })
    }

    /// Fingerprints of the primary keys (for tests).
    #[cfg(test)]
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{:X}", k.fingerprint()))
            .collect()
    }

    /// Checks `sig` over `data`: made by a key (primary or subkey) of this
    /// keyring that is neither revoked nor expired now, itself not expired
    /// and not from the future. Ok: the signing primary key's fingerprint.
    fn check(&self, sig: &Signature, data: &[u8], now: SystemTime) -> Result<String, String> {
        let ids: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .chain(sig.issuer_key_id().iter().map(|k| hex_id(k.as_ref())))
            .collect();
        let now_s = secs(now);
        let created = sig.created().map(|t| t.as_secs() as u64).unwrap_or(0);
        if created > now_s + FUTURE_SLACK.as_secs() {
            return Err("the signature is dated in the future".into());
        }
        if let Some(exp) = sig.signature_expiration_time() {
            if exp.as_secs() > 0 && created + u64::from(exp.as_secs()) < now_s {
                return Err("the signature has expired".into());
            }
        }
        let matches = |fp: String, id: String| {
            ids.iter()
                .any(|i| fp.ends_with(i.as_str()) || id.eq_ignore_ascii_case(i))
        };
        for key in &self.keys {
            let primary = format!("{:X}", key.fingerprint());
            if !key.details.revocation_signatures.is_empty() {
                continue;
            }
            let key_exp = newest_expiry(
                key.details
                    .users
                    .iter()
                    .flat_map(|u| u.signatures.iter())
                    .chain(key.details.direct_signatures.iter()),
            );
            let key_created = key.created_at().as_secs() as u64;
            let primary_expired = key_exp.is_some_and(|e| key_created + e < now_s);
            if matches(primary.clone(), hex_id(key.legacy_key_id().as_ref())) {
                if primary_expired {
                    return Err(format!("it was made by key {primary}, which has expired"));
                }
                return sig
                    .verify(&key.primary_key, data)
                    .map(|_| primary.clone())
                    .map_err(|e| format!("bad signature by key {primary}: {e}"));
            }
            for sub in &key.public_subkeys {
                let fp = format!("{:X}", sub.key.fingerprint());
                if !matches(fp.clone(), hex_id(sub.key.legacy_key_id().as_ref())) {
                    continue;
                }
                let revoked = sub
                    .signatures
                    .iter()
                    .any(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyRevocation));
                let sub_exp = newest_expiry(sub.signatures.iter());
                let sub_created = sub.key.created_at().as_secs() as u64;
                if revoked {
                    return Err(format!("it was made by subkey {fp}, which is revoked"));
                }
                if primary_expired || sub_exp.is_some_and(|e| sub_created + e < now_s) {
                    return Err(format!("it was made by subkey {fp}, which has expired"));
                }
                return sig
                    .verify(&sub.key, data)
                    .map(|_| primary.clone())
                    .map_err(|e| format!("bad signature by key {fp}: {e}"));
            }
        }
        Err(format!(
            "it was made by key {}, which is not in the {}",
            ids.first().map(String::as_str).unwrap_or("(unnamed)"),
            self.name
        ))
    }

    /// At least one signature in `sigs` must check out (apt's rule: one
    /// good signature from a trusted key suffices; others, say by a newer
    /// key the keyring does not have yet, are ignored).
    fn check_any(
        &self,
        what: &str,
        sigs: &[Signature],
        data: &[u8],
        now: SystemTime,
    ) -> Result<String> {
        let mut why = Vec::new();
        for s in sigs {
            match self.check(s, data, now) {
                Ok(fp) => return Ok(fp),
                Err(e) => why.push(e),
            }
        }
        if why.is_empty() {
            why.push("it carries no signature".into());
        }
        Err(hinted(
            format!("{what} is not validly signed: {}", why.join("; ")),
            "the archive is tampered with, or signed by a key xroot does not trust: \
             nothing was installed. Use the archive's keyring with --keyring FILE if you trust it",
        ))
    }
}

/// The latest key-expiration time (seconds after key creation) among
/// self-signatures, `None` if the key does not expire.
fn newest_expiry<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<u64> {
    let mut best: Option<(u64, Option<u64>)> = None;
    for s in sigs {
        let c = s.created().map(|t| t.as_secs() as u64).unwrap_or(0);
        if best.map_or(true, |(bc, _)| c >= bc) {
            let e = s
                .key_expiration_time()
                .map(|d| u64::from(d.as_secs()))
                .filter(|&d| d > 0);
            best = Some((c, e));
        }
    }
    best.and_then(|(_, e)| e)
}

fn hex_id(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies an `InRelease` file; returns the signed Release text (with
/// `\n` line ends) and the signer's fingerprint.
pub fn verify_inrelease(
    url: &str,
    text: &str,
    keyring: &Keyring,
    now: SystemTime,
) -> Result<(String, String)> {
    let (msg, _) = CleartextSignedMessage::from_string(text).map_err(|e| {
        hinted(
            format!("{url} is not an OpenPGP cleartext-signed file: {e}"),
            "the mirror is broken or tampered with; try another --mirror",
        )
    })?;
    let signed = msg.signed_text();
    let fp = keyring.check_any(url, msg.signatures(), signed.as_bytes(), now)?;
    Ok((signed.replace("\r\n", "\n"), fp))
}

/// Verifies `Release` against its detached, armored `Release.gpg`.
pub fn verify_detached(
    url: &str,
    release: &[u8],
    sig: &[u8],
    keyring: &Keyring,
    now: SystemTime,
) -> Result<String> {
    let sigs: Vec<Signature> = match DetachedSignature::from_armor_many(Cursor::new(sig)) {
        Ok((it, _)) => it.filter_map(|s| s.ok()).map(|d| d.signature).collect(),
        Err(_) => DetachedSignature::from_bytes_many(Cursor::new(sig))
            .map(|it| it.filter_map(|s| s.ok()).map(|d| d.signature).collect())
            .unwrap_or_default(),
    };
    keyring.check_any(url, &sigs, release, now)
}

/// What a verified Release says.
#[derive(Debug, Clone, Default)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    pub version: String,
    pub date: Option<u64>,
    pub valid_until: Option<u64>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// Index path (relative to the suite directory) → (size, sha256).
    pub sha256: HashMap<String, (u64, String)>,
}

impl Release {
    pub fn parse(url: &str, text: &str) -> Result<Release> {
        let paras = control::paragraphs(text);
        let p = paras
            .first()
            .ok_or_else(|| anyhow!("{url}: the Release file is empty"))?;
        let words = |f: &str| -> Vec<String> {
            p.get(f)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        let date = |f: &str| -> Result<Option<u64>> {
            p.get(f)
                .map(|d| {
                    parse_date(d).ok_or_else(|| anyhow!("{url}: cannot read the {f} date {d:?}"))
                })
                .transpose()
        };
        let mut sha256 = HashMap::new();
        for line in p.get("SHA256").unwrap_or_default().lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if let [hash, size, path] = w[..] {
                if crate::mirror::check_hex(hash, 64).is_ok() {
                    if let Ok(size) = size.parse() {
                        sha256.insert(path.to_string(), (size, hash.to_ascii_lowercase()));
                    }
                }
            }
        }
        if sha256.is_empty() {
            return Err(hinted(
                format!("{url} lists no SHA256 hashes"),
                "xroot verifies indexes by SHA256 only; this archive is too old or broken",
            ));
        }
        Ok(Release {
            suite: p.get("Suite").unwrap_or_default().to_string(),
            codename: p.get("Codename").unwrap_or_default().to_string(),
            version: p.get("Version").unwrap_or_default().to_string(),
            date: date("Date")?,
            valid_until: date("Valid-Until")?,
            architectures: words("Architectures"),
            components: words("Components"),
            sha256,
        })
    }

    /// apt's freshness checks: not expired (`Valid-Until`), not from the
    /// future (`Date`), and for the suite asked for (a signed Release of
    /// another suite replayed in its place is refused).
    pub fn check(&self, url: &str, suite: &str, now: SystemTime) -> Result<()> {
        let now = secs(now);
        if let Some(v) = self.valid_until.filter(|&v| v < now) {
            return Err(hinted(
                format!(
                    "{url} expired at {} (Valid-Until)",
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(v))
                ),
                "the mirror is stale or replaying an old release; try another --mirror",
            ));
        }
        if let Some(d) = self.date.filter(|&d| d > now + FUTURE_SLACK.as_secs()) {
            return Err(hinted(
                format!(
                    "{url} is dated in the future ({})",
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(d))
                ),
                "check this machine's clock",
            ));
        }
        if suite != self.suite && suite != self.codename {
            return Err(hinted(
                format!(
                    "{url} is for suite {:?} (codename {:?}), not {suite:?}",
                    self.suite, self.codename
                ),
                "the mirror serves another suite under this name; check --suite and --mirror",
            ));
        }
        Ok(())
    }
}

/// Parses a Release date, `Sat, 11 Jul 2026 10:16:37 UTC` (RFC 2822 as
/// Debian writes it; `+0000` and `GMT` too), to seconds since the epoch.
pub fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.split_once(", ").map(|(_, r)| r).unwrap_or(s);
    let w: Vec<&str> = s.split_whitespace().collect();
    let [d, mon, y, hms, zone] = w[..] else {
        return None;
    };
    if !matches!(zone, "UTC" | "GMT" | "UT" | "+0000" | "Z") {
        return None;
    }
    const M: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = M.iter().position(|x| x.eq_ignore_ascii_case(mon))? as i64 + 1;
    let (d, y): (i64, i64) = (d.parse().ok()?, y.parse().ok()?);
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t[..] else { return None };
    if !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's real bookworm InRelease (fetched by apt; see
    /// tests/common/debmirror.sh) and the keyrings xroot embeds.
    const INRELEASE: &str = include_str!("../../../tests/data/debian/bookworm-InRelease");

    fn debian() -> Keyring {
        Keyring::parse("Debian archive keyring", super::super::DEBIAN_KEYRING).unwrap()
    }

    #[test]
    fn real_inrelease_verifies_against_debians_keyring() {
        let (text, fp) = verify_inrelease("IR", INRELEASE, &debian(), SystemTime::now()).unwrap();
        assert!(debian().fingerprints().contains(&fp), "{fp}");
        let r = Release::parse("IR", &text).unwrap();
        assert_eq!(r.codename, "bookworm");
        assert!(r.sha256.contains_key("main/binary-s390x/Packages.xz"));
        r.check("IR", "bookworm", SystemTime::now()).unwrap();
    }

    #[test]
    fn tampered_or_foreign_inrelease_is_refused() {
        // One byte of one hash changed.
        let i = INRELEASE.find("main/binary-s390x/Packages.xz").unwrap() - 20;
        let mut t = INRELEASE.to_string();
        let c = if &t[i..=i] == "0" { "1" } else { "0" };
        t.replace_range(i..=i, c);
        let e = verify_inrelease("IR", &t, &debian(), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
        // Signed by keys the ports keyring does not hold.
        let ports = Keyring::parse("ports", super::super::PORTS_KEYRING).unwrap();
        let e = verify_inrelease("IR", INRELEASE, &ports, SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("not in the ports"), "{e}");
        // Text added outside the signed block is never parsed.
        let t = format!("Suite: evil\n{INRELEASE}");
        let r = verify_inrelease("IR", &t, &debian(), SystemTime::now());
        assert!(r.map(|(text, _)| !text.contains("evil")).unwrap_or(true));
        assert!(Keyring::parse("junk", b"not a key").is_err());
    }

    #[test]
    fn expired_keys_are_refused() {
        // Debian's keys expire (bookworm's in 2031, bullseye's in 2029):
        // verified as of 2040, the real signatures are refused.
        let later = UNIX_EPOCH + Duration::from_secs(2_208_988_800);
        let e = verify_inrelease("IR", INRELEASE, &debian(), later).unwrap_err();
        assert!(e.to_string().contains("has expired"), "{e}");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 11 Jul 2026 10:16:37 UTC"),
            Some(1_783_764_997)
        );
        assert_eq!(parse_date("Sat, 11 Jul 2026 10:16:37 +0200"), None);
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn release_fields_and_checks() {
        let t = "Suite: stable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n\
                 Valid-Until: Sat, 18 Jul 2026 10:16:37 UTC\nArchitectures: s390x arm64\n\
                 SHA256:\n 0000000000000000000000000000000000000000000000000000000000000000 12 main/binary-s390x/Packages\n";
        let r = Release::parse("R", t).unwrap();
        assert_eq!(r.architectures, ["s390x", "arm64"]);
        assert_eq!(r.sha256["main/binary-s390x/Packages"].0, 12);
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert!(r.check("R", "bookworm", at(1_783_764_997)).is_ok());
        assert!(r.check("R", "stable", at(1_783_764_997)).is_ok());
        let e = r.check("R", "trixie", at(1_783_764_997)).unwrap_err();
        assert!(e.to_string().contains("not \"trixie\""), "{e}");
        let e = r.check("R", "bookworm", at(1_790_000_000)).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let e = r.check("R", "bookworm", at(1_700_000_000)).unwrap_err();
        assert!(e.to_string().contains("future"), "{e}");
    }
}
