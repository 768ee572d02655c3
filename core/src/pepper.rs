//! The pepper file named by `apikey.pepper_file`: one pepper per line, newest first, blank
//! lines and `#` comments ignored. Each pepper is identified by a fingerprint that is stored
//! next to every hash it produced, so old keys keep verifying after a new pepper is added.
//!
//! Errors never contain file contents: only the GUC name, the path and line numbers.

use hmac::Mac;
use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const GUC: &str = "apikey.pepper_file";
pub const MIN_PEPPER_BYTES: usize = 32;

pub struct Pepper {
    bytes: Vec<u8>,
    pub fingerprint: String,
}

impl Pepper {
    pub fn new(bytes: Vec<u8>) -> Self {
        let mut mac = crate::hash::hmac_sha256(&bytes);
        mac.update(b"apikey pepper fingerprint v1");
        let digest = mac.finalize().into_bytes();
        let fingerprint = crate::hash::to_hex(&digest[..8]);
        Pepper { bytes, fingerprint }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The peppers in force, newest first; never empty.
pub struct PepperSet(Vec<Pepper>);

impl PepperSet {
    pub fn newest(&self) -> &Pepper {
        &self.0[0]
    }

    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<&Pepper> {
        self.0.iter().find(|p| p.fingerprint == fingerprint)
    }

    /// Every pepper's bytes, the newest first.
    pub fn all_bytes(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.0.iter().map(Pepper::bytes)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum PepperError {
    NotConfigured,
    Unreadable { path: String, why: String },
    TooPermissive { path: String, mode: u32 },
    NoPepper { path: String },
    TooShort { path: String, line: usize },
}

impl std::fmt::Display for PepperError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PepperError::NotConfigured => write!(f, "{GUC} is not set: no pepper is configured"),
            PepperError::Unreadable { path, why } => {
                write!(f, "{GUC}: cannot read pepper file \"{path}\": {why}")
            }
            PepperError::TooPermissive { path, mode } => write!(
                f,
                "{GUC}: pepper file \"{path}\" has group or world access (mode {mode:04o})"
            ),
            PepperError::NoPepper { path } => {
                write!(f, "{GUC}: pepper file \"{path}\" contains no pepper")
            }
            PepperError::TooShort { path, line } => write!(
                f,
                "{GUC}: the pepper on line {line} of \"{path}\" is shorter than {MIN_PEPPER_BYTES} bytes"
            ),
        }
    }
}

impl PepperError {
    pub fn hint(&self) -> &'static str {
        match self {
            PepperError::NotConfigured | PepperError::NoPepper { .. } => {
                "Write a pepper (e.g. the output of `openssl rand -base64 48`) to a file readable only by the server, set apikey.pepper_file to its path, and reload."
            }
            PepperError::Unreadable { .. } => {
                "The file must exist and be readable by the operating-system user that runs PostgreSQL."
            }
            PepperError::TooPermissive { .. } => "Run chmod 600 on the pepper file.",
            PepperError::TooShort { .. } => {
                "Use at least 32 random bytes, e.g. the output of `openssl rand -base64 48`."
            }
        }
    }
}

/// Parses the file's contents. `path` is only used for error messages.
pub fn parse(path: &str, contents: &[u8]) -> Result<PepperSet, PepperError> {
    let mut peppers = Vec::new();
    for (index, raw) in contents.split(|&b| b == b'\n').enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if line.len() < MIN_PEPPER_BYTES {
            return Err(PepperError::TooShort {
                path: path.to_string(),
                line: index + 1,
            });
        }
        peppers.push(Pepper::new(line.to_vec()));
    }
    if peppers.is_empty() {
        return Err(PepperError::NoPepper {
            path: path.to_string(),
        });
    }
    Ok(PepperSet(peppers))
}

/// What identifies one version of the file: re-read only when this changes.
#[derive(PartialEq, Eq, Clone)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How long a backend trusts the file it loaded without looking at it again. A `stat` per
/// verification measured 5% of a warm one; a rewritten, replaced or `chmod`-ed file is
/// noticed within this interval, and a changed `apikey.pepper_file` setting at once.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

struct Loaded {
    path: String,
    version: FileVersion,
    checked_at: Instant,
    peppers: Rc<PepperSet>,
}

thread_local! {
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

/// Loads the peppers of the file at `path`, or reuses the ones loaded from it if the file was
/// looked at less than [`RECHECK_AFTER`] before `now` or has not changed since.
pub fn load(path: Option<&str>, now: Instant) -> Result<Rc<PepperSet>, PepperError> {
    let path = match path {
        Some(p) if !p.trim().is_empty() => p,
        _ => return Err(PepperError::NotConfigured),
    };
    let recent = LOADED.with_borrow(|loaded| {
        loaded
            .as_ref()
            .filter(|l| {
                l.path == path && now.saturating_duration_since(l.checked_at) < RECHECK_AFTER
            })
            .map(|l| Rc::clone(&l.peppers))
    });
    if let Some(peppers) = recent {
        return Ok(peppers);
    }
    // Until the file checks out again, nothing loaded from it earlier may be used.
    let previous = LOADED.take().filter(|l| l.path == path);
    let unreadable = |e: std::io::Error| PepperError::Unreadable {
        path: path.to_string(),
        why: e.kind().to_string(),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(PepperError::Unreadable {
            path: path.to_string(),
            why: "not a regular file".into(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PepperError::TooPermissive {
            path: path.to_string(),
            mode,
        });
    }
    let version = FileVersion {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mode,
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    };
    let peppers = match previous {
        Some(l) if l.version == version => l.peppers,
        _ => {
            let contents = std::fs::read(path).map_err(unreadable)?;
            Rc::new(parse(path, &contents)?)
        }
    };
    LOADED.set(Some(Loaded {
        path: path.to_string(),
        version,
        checked_at: now,
        peppers: Rc::clone(&peppers),
    }));
    Ok(peppers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn newest_first_comments_and_blank_lines_ignored() {
        let file = format!("# rotated 2026-11\n\n  {A}  \n{B}\r\n");
        let set = parse("f", file.as_bytes()).unwrap();
        assert_eq!(set.newest().bytes(), A.as_bytes());
        let old = Pepper::new(B.as_bytes().to_vec());
        assert_eq!(
            set.by_fingerprint(&old.fingerprint).unwrap().bytes(),
            B.as_bytes()
        );
        assert!(set.by_fingerprint("0000000000000000").is_none());
    }

    #[test]
    fn fingerprints_differ_and_do_not_contain_the_pepper() {
        let a = Pepper::new(A.as_bytes().to_vec());
        let b = Pepper::new(B.as_bytes().to_vec());
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 16);
        assert!(!a.fingerprint.contains("AAAA"));
    }

    #[test]
    fn short_and_empty_files_are_refused_without_echoing_content() {
        let err = parse("/p", b"# only a comment\n\n").err().unwrap();
        assert_eq!(err, PepperError::NoPepper { path: "/p".into() });
        let err = parse("/p", format!("{A}\nshort-secret-value\n").as_bytes())
            .err()
            .unwrap();
        assert_eq!(
            err,
            PepperError::TooShort {
                path: "/p".into(),
                line: 2
            }
        );
        assert!(!err.to_string().contains("short-secret-value"));
        assert!(err.to_string().contains(GUC));
    }

    #[test]
    fn load_checks_configuration_permissions_and_reloads_on_change() {
        let start = Instant::now();
        // Each step is a recheck interval after the previous one, so the file is looked at.
        let mut step = 0;
        let mut later = || {
            step += 1;
            start + RECHECK_AFTER * step
        };
        assert_eq!(load(None, later()).err(), Some(PepperError::NotConfigured));
        assert_eq!(
            load(Some("  "), later()).err(),
            Some(PepperError::NotConfigured)
        );
        assert!(matches!(
            load(Some("/nonexistent/pepper"), later()).err(),
            Some(PepperError::Unreadable { .. })
        ));

        let dir = std::env::temp_dir().join(format!("apikey-pepper-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pepper");
        let path_str = path.to_str().unwrap();
        std::fs::write(&path, A).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(Some(path_str), later()).err().unwrap();
        assert!(matches!(
            err,
            PepperError::TooPermissive { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains(GUC));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded_at = later();
        assert_eq!(
            load(Some(path_str), loaded_at).unwrap().newest().bytes(),
            A.as_bytes()
        );
        std::fs::write(&path, format!("{B}\n{A}\n")).unwrap();
        // Within the interval the loaded peppers are used without looking at the file...
        let soon = loaded_at + RECHECK_AFTER / 2;
        assert_eq!(
            load(Some(path_str), soon).unwrap().newest().bytes(),
            A.as_bytes()
        );
        // ...after it, the change is seen.
        let reloaded = load(Some(path_str), later()).unwrap();
        assert_eq!(reloaded.newest().bytes(), B.as_bytes());
        // An unchanged file is looked at after the interval but not read again.
        let unchanged = load(Some(path_str), later()).unwrap();
        assert!(
            Rc::ptr_eq(&reloaded, &unchanged),
            "the same peppers, not a re-read"
        );
        // Opening the file up is noticed after the interval, and nothing cached is used.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused_at = later();
        assert!(load(Some(path_str), refused_at).is_err());
        assert!(
            load(Some(path_str), refused_at).is_err(),
            "an error is not cached as success"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pepper_of_exactly_the_minimum_length_is_accepted() {
        let shortest = "p".repeat(MIN_PEPPER_BYTES);
        let set = parse("/p", shortest.as_bytes()).unwrap();
        assert_eq!(set.newest().bytes(), shortest.as_bytes());
        assert_eq!(
            parse("/p", &shortest.as_bytes()[1..]).err(),
            Some(PepperError::TooShort {
                path: "/p".into(),
                line: 1
            })
        );
    }

    #[test]
    fn every_error_comes_with_the_hint_that_fixes_it() {
        let cases = [
            (PepperError::NotConfigured, "set apikey.pepper_file"),
            (
                PepperError::NoPepper { path: "/p".into() },
                "set apikey.pepper_file",
            ),
            (
                PepperError::Unreadable {
                    path: "/p".into(),
                    why: "not found".into(),
                },
                "readable by the operating-system user",
            ),
            (
                PepperError::TooPermissive {
                    path: "/p".into(),
                    mode: 0o644,
                },
                "chmod 600",
            ),
            (
                PepperError::TooShort {
                    path: "/p".into(),
                    line: 1,
                },
                "at least 32 random bytes",
            ),
        ];
        for (error, fix) in cases {
            assert!(error.hint().contains(fix), "{error:?}: {}", error.hint());
        }
    }
}
