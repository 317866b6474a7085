//! The demo's users: e-mail addresses and Argon2id password hashes, nothing else.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

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
    /// The hash is not an Argon2 PHC string this server can verify.
    BadHash,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserError::BadEmail => "e-mail must be 1 to 255 bytes without control characters",
            UserError::EmptyPassword => "password is empty",
            UserError::Duplicate => "e-mail is given twice",
            UserError::BadHash => {
                "not an Argon2 PHC hash ($argon2id$v=19$m=..,t=..,p=..$salt$hash)"
            }
        })
    }
}

impl std::error::Error for UserError {}

/// The user table. Read-only once the server starts; a clone shares it (the hashing
/// pool's threads hold one).
#[derive(Debug, Clone)]
pub struct Users {
    table: Arc<Table>,
}

#[derive(Debug, Clone)]
struct Table {
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
            table: Arc::new(Table {
                users: Vec::new(),
                by_email: HashMap::default(),
                cost,
                decoy: hash(cost, "decoy password"),
            }),
        }
    }

    /// Adds a user; only the password's hash is kept.
    pub fn add(&mut self, email: &str, password: &str) -> Result<&User, UserError> {
        check_email(email)?;
        if password.is_empty() {
            return Err(UserError::EmptyPassword);
        }
        if self.find(email).is_some() {
            return Err(UserError::Duplicate);
        }
        let hash = hash(self.table.cost, password);
        Ok(self.push(email, hash))
    }

    /// Adds a user by a password hash made elsewhere: an Argon2 (`argon2id`, `argon2i`
    /// or `argon2d`) PHC string, verified with the parameters it names. A hash at
    /// another cost than this table's makes that user's sign-ins take another time
    /// than an unknown address's, which [`Users::cost_differs`] tells.
    pub fn add_hash(&mut self, email: &str, phc: &str) -> Result<&User, UserError> {
        check_email(email)?;
        let parsed = PasswordHash::new(phc).map_err(|_| UserError::BadHash)?;
        if Algorithm::try_from(parsed.algorithm).is_err() || parsed.hash.is_none() {
            return Err(UserError::BadHash);
        }
        Params::try_from(&parsed).map_err(|_| UserError::BadHash)?;
        if self.find(email).is_some() {
            return Err(UserError::Duplicate);
        }
        Ok(self.push(email, phc.to_owned()))
    }

    /// Whether this user's hash costs other than the table's (the decoy's), so that
    /// timing could tell their address from an unknown one.
    pub fn cost_differs(&self, user: &User) -> bool {
        let cost = self.table.cost;
        PasswordHash::new(&user.hash)
            .ok()
            .and_then(|p| Params::try_from(&p).ok())
            .is_none_or(|p| p.m_cost() != cost.memory_kib || p.t_cost() != cost.iterations)
    }

    fn push(&mut self, email: &str, hash: String) -> &User {
        // Built before serving, when no clone exists: this does not copy.
        let table = Arc::make_mut(&mut self.table);
        let id = table.users.len() as u64 + 1;
        table.by_email.insert(email.to_owned(), table.users.len());
        table.users.push(User {
            id,
            email: email.to_owned(),
            hash,
        });
        &table.users[table.users.len() - 1]
    }

    /// The user with this address (exact match; uids are case-sensitive in baton).
    pub fn find(&self, email: &str) -> Option<&User> {
        self.table
            .by_email
            .get(email)
            .map(|&i| &self.table.users[i])
    }

    /// The user if the password is theirs. Costs one hash whether or not the address
    /// exists. Blocks for that hash: a server calls it through the hashing pool.
    pub fn verify(&self, email: &str, password: &str) -> Option<&User> {
        let user = self.find(email);
        let phc = user.map_or(self.table.decoy.as_str(), |u| u.hash.as_str());
        // Argon2 verifies with the algorithm and parameters the PHC string names.
        let ok = PasswordHash::new(phc).is_ok_and(|parsed| {
            self.table
                .cost
                .hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        user.filter(|_| ok)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.table.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.users.is_empty()
    }

    /// Every user, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.table.users.iter()
    }
}

fn check_email(email: &str) -> Result<(), UserError> {
    if email.is_empty() || email.len() > baton::MAX_UID_LEN || email.chars().any(char::is_control) {
        return Err(UserError::BadEmail);
    }
    Ok(())
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
        assert!(users.table.users[0].hash.starts_with("$argon2id$"));
    }

    #[test]
    fn a_hash_made_elsewhere_verifies_with_its_own_parameters() {
        let other = HashCost {
            memory_kib: 16,
            iterations: 2,
        };
        let phc = hash(other, "from-a-file");
        let mut users = Users::new(HashCost::FAST);
        let user = users.add_hash("h@example.com", &phc).unwrap().clone();
        assert!(users.cost_differs(&user));
        assert!(users.verify("h@example.com", "from-a-file").is_some());
        assert!(users.verify("h@example.com", "from-a-filE").is_none());
        let same = hash(HashCost::FAST, "x");
        let user = users.add_hash("s@example.com", &same).unwrap().clone();
        assert!(!users.cost_differs(&user));
        for bad in [
            "",
            "plain",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert_eq!(
                users.add_hash("b@example.com", bad).unwrap_err(),
                UserError::BadHash,
                "{bad}"
            );
        }
        assert_eq!(
            users.add_hash("h@example.com", &phc).unwrap_err(),
            UserError::Duplicate
        );
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
