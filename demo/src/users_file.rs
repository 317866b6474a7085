//! `--users-file`: the users who may sign in, without a secret on the command line.
//!
//! One user a line, `EMAIL:PASSWORD` or `EMAIL:$argon2id$...` (an Argon2 PHC string,
//! as `argon2` or any PHC-compliant library writes it). The line is split at its first
//! colon (addresses have none); a value starting `$argon2` is taken as a hash, so a
//! plain-text password cannot start so. Blank lines and lines starting `#` (after
//! spaces) are skipped; a trailing `\r` is ignored. Errors name the line, never its
//! secret.

use std::fmt;
use std::path::Path;

use crate::users::{UserError, Users};

/// The text shown in `--help`.
pub const FORMAT: &str = "\
--users-file PATH holds one user a line, EMAIL:PASSWORD or EMAIL:$argon2id$v=19$m=..
(an Argon2 PHC hash, e.g. from `argon2` or Python's argon2-cffi); blank lines and
lines starting with # are skipped. The file should be readable by its owner only.";

/// Why the file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersFileError {
    /// It could not be read (the I/O error's text).
    Read(String),
    /// A line is malformed or its user refused.
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong, without the secret.
        problem: LineProblem,
    },
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// No colon, or nothing on one side of it.
    Shape,
    /// Not valid UTF-8.
    Encoding,
    /// The user table refused it.
    User(UserError),
}

impl fmt::Display for UsersFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersFileError::Read(e) => write!(f, "cannot read it: {e}"),
            UsersFileError::Line { line, problem } => {
                write!(f, "line {line}: ")?;
                match problem {
                    LineProblem::Shape => f.write_str(
                        "expected EMAIL:PASSWORD or EMAIL:$argon2id$..., both non-empty",
                    ),
                    LineProblem::Encoding => f.write_str("not UTF-8"),
                    LineProblem::User(e) => write!(f, "{e}"),
                }
            }
        }
    }
}

impl std::error::Error for UsersFileError {}

/// Adds every user of `text` to `users`.
pub fn add_all(users: &mut Users, text: &[u8]) -> Result<usize, UsersFileError> {
    let mut added = 0;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let at = |problem| UsersFileError::Line {
            line: i + 1,
            problem,
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|_| at(LineProblem::Encoding))?;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (email, secret) = match line.split_once(':') {
            Some((e, s)) if !e.trim().is_empty() && !s.is_empty() => (e.trim(), s),
            _ => return Err(at(LineProblem::Shape)),
        };
        let result = if secret.starts_with("$argon2") {
            users.add_hash(email, secret.trim_end())
        } else {
            users.add(email, secret)
        };
        result.map_err(|e| at(LineProblem::User(e)))?;
        added += 1;
    }
    Ok(added)
}

/// Reads `path` and adds its users. Also says whether the file is readable by group or
/// others (Unix), for the caller to warn about.
pub fn load(users: &mut Users, path: &Path) -> Result<(usize, bool), UsersFileError> {
    let text = std::fs::read(path).map_err(|e| UsersFileError::Read(e.to_string()))?;
    let added = add_all(users, &text)?;
    Ok((added, readable_by_others(path)))
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::HashCost;

    #[test]
    fn reads_passwords_hashes_and_comments() {
        let phc = argon2_phc("hashed elsewhere");
        let text = format!(
            "# users\n\n  # indented comment\nann@example.com:pass:with:colons\r\nbob@example.com:{phc}\n"
        );
        let mut users = Users::new(HashCost::FAST);
        assert_eq!(add_all(&mut users, text.as_bytes()), Ok(2));
        assert!(users
            .verify("ann@example.com", "pass:with:colons")
            .is_some());
        assert!(users
            .verify("bob@example.com", "hashed elsewhere")
            .is_some());
        assert!(users.verify("bob@example.com", &phc).is_none());
    }

    fn argon2_phc(password: &str) -> String {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    #[test]
    fn errors_name_the_line_and_never_the_secret() {
        let cases: [(&[u8], usize, LineProblem); 6] = [
            (
                b"ann@example.com:ok\nno-colon-secret\n",
                2,
                LineProblem::Shape,
            ),
            (b":only-a-secret", 1, LineProblem::Shape),
            (b"ann@example.com:", 1, LineProblem::Shape),
            (
                b"# c\nann@example.com:\xff\xfe-secret",
                2,
                LineProblem::Encoding,
            ),
            (
                b"ann@example.com:$argon2id$broken-secret",
                1,
                LineProblem::User(UserError::BadHash),
            ),
            (
                b"ann@example.com:a-secret\nann@example.com:b-secret",
                2,
                LineProblem::User(UserError::Duplicate),
            ),
        ];
        for (text, line, problem) in cases {
            let mut users = Users::new(HashCost::FAST);
            let e = add_all(&mut users, text).unwrap_err();
            assert_eq!(
                e,
                UsersFileError::Line {
                    line,
                    problem: problem.clone()
                }
            );
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(&format!("line {line}")), "{shown}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}
