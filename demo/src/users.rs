//! The demo's users: e-mail addresses and Argon2id password hashes, nothing else.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// How expensive a password hash is. The default is a real one; tests build users
/// with [`HashCost::FAST`] because they also run unoptimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
}

impl HashCost {
    /// OWASP's second Argon2id option (19 MiB, 2 passes): tens of milliseconds per sign-in.
    pub const DEFAULT: HashCost = HashCost {
        memory_kib: 19 * 1024,
        iterations: 2,
    };
    /// The smallest cost Argon2 allows, for tests only.
    pub const FAST: HashCost = HashCost {
        memory_kib: 8,
        iterations: 1,
    };

    fn hasher(self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .unwrap_or_else(|_| Params::default());
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost::DEFAULT
    }
}

/// A user who may sign in.
#[derive(Clone)]
pub struct User {
    /// A stable numeric id, as devise's `id`.
    pub id: u64,
    /// The e-mail address; also the uid.
    pub email: String,
    /// The PHC string of the password's hash.
    hash: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("hash", &"<redacted>")
            .finish()
    }
}

/// Why a user could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    /// The address is empty, too long for a uid, or has characters a header cannot carry.
    BadEmail,
    /// The password is empty.
    EmptyPassword,
    /// The address is taken.
    Duplicate,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserError::BadEmail => "e-mail must be 1 to 255 bytes without control characters",
            UserError::EmptyPassword => "password is empty",
            UserError::Duplicate => "e-mail is given twice",
        })
    }
}

impl std::error::Error for UserError {}

/// The user table. Read-only once the server starts.
#[derive(Debug)]
pub struct Users {
    users: Vec<User>,
    by_email: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    cost: HashCost,
    /// Verified against when the address is unknown, so that a wrong address costs as
    /// long as a wrong password and timing does not tell which addresses exist.
    decoy: String,
}

impl Users {
    /// An empty table hashing at `cost`.
    pub fn new(cost: HashCost) -> Self {
        Users {
            users: Vec::new(),
            by_email: HashMap::default(),
            cost,
            decoy: hash(cost, "decoy password"),
        }
    }

    /// Adds a user; only the password's hash is kept.
    pub fn add(&mut self, email: &str, password: &str) -> Result<&User, UserError> {
        if email.is_empty()
            || email.len() > baton::MAX_UID_LEN
            || email.chars().any(char::is_control)
        {
            return Err(UserError::BadEmail);
        }
        if password.is_empty() {
            return Err(UserError::EmptyPassword);
        }
        if self.find(email).is_some() {
            return Err(UserError::Duplicate);
        }
        let id = self.users.len() as u64 + 1;
        self.by_email.insert(email.to_owned(), self.users.len());
        self.users.push(User {
            id,
            email: email.to_owned(),
            hash: hash(self.cost, password),
        });
        Ok(&self.users[self.users.len() - 1])
    }

    /// The user with this address (exact match; uids are case-sensitive in baton).
    pub fn find(&self, email: &str) -> Option<&User> {
        self.by_email.get(email).map(|&i| &self.users[i])
    }

    /// The user if the password is theirs. Costs one hash whether or not the address exists.
    pub fn verify(&self, email: &str, password: &str) -> Option<&User> {
        let user = self.find(email);
        let phc = user.map_or(self.decoy.as_str(), |u| u.hash.as_str());
        let ok = PasswordHash::new(phc).is_ok_and(|parsed| {
            self.cost
                .hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        user.filter(|_| ok)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// FNV-1a, for the address index, which every authenticated request looks up. The
/// table is filled from the command line before serving, so no request can place keys
/// that collide; std's keyed SipHash would guard against that at about twice the cost.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn hash(cost: HashCost, password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    cost.hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Unreachable with valid params and a generated salt; an unverifiable hash
        // then simply refuses every password.
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_password_and_keeps_no_plain_text() {
        let mut users = Users::new(HashCost::FAST);
        users.add("a@example.com", "s3cret-pass").unwrap();
        assert_eq!(
            users.verify("a@example.com", "s3cret-pass").map(|u| u.id),
            Some(1)
        );
        assert!(users.verify("a@example.com", "s3cret-pasS").is_none());
        assert!(users.verify("b@example.com", "s3cret-pass").is_none());
        let shown = format!("{users:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(users.users[0].hash.starts_with("$argon2id$"));
    }

    #[test]
    fn refuses_bad_users() {
        let mut users = Users::new(HashCost::FAST);
        assert_eq!(users.add("", "p").unwrap_err(), UserError::BadEmail);
        assert_eq!(users.add("a\nb", "p").unwrap_err(), UserError::BadEmail);
        assert_eq!(
            users.add(&"a".repeat(256), "p").unwrap_err(),
            UserError::BadEmail
        );
        assert_eq!(users.add("a", "").unwrap_err(), UserError::EmptyPassword);
        users.add("a", "p").unwrap();
        assert_eq!(users.add("a", "q").unwrap_err(), UserError::Duplicate);
    }
}
