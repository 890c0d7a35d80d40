//! Credentials: system keys, secrets and their argon2id hashes, tenant API tokens.
//!
//! A system authenticates with its public key (`FL-XXXX-XXXX-XXXX`) and a secret that is shown
//! once at registration or rotation and stored only as an argon2id hash. Tenant API tokens carry
//! 256 random bits, so a plain SHA-256 identifies them without a slow hash.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Letters of system keys: Crockford's base32 (no I, L, O, U), so keys survive being read aloud.
const KEY_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Prefix of tenant API tokens, so a leaked one is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "flt_";

/// The public key a system or gateway authenticates with: `FL-` and three groups of four
/// base32 letters (60 random bits). Its id is derived from it, so the key is the domain's own key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemKey(String);

impl SystemKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let letters: Vec<char> = bytes
            .iter()
            .map(|b| KEY_ALPHABET[usize::from(b & 31)] as char)
            .collect();
        let groups: Vec<String> = letters.chunks(4).map(|g| g.iter().collect()).collect();
        Self(format!("FL-{}", groups.join("-")))
    }

    /// Reads a key as a client sent it (case-insensitive); `None` when it is not shaped like one.
    pub fn parse(raw: &str) -> Option<Self> {
        let key = raw.trim().to_ascii_uppercase();
        let rest = key.strip_prefix("FL-")?;
        let groups: Vec<&str> = rest.split('-').collect();
        let well_formed = groups.len() == 3
            && groups
                .iter()
                .all(|g| g.len() == 4 && g.bytes().all(|b| KEY_ALPHABET.contains(&b)));
        well_formed.then_some(Self(key))
    }

    /// The id of the system or gateway with this key (UUID v5 of the key).
    pub fn system_id(&self) -> Uuid {
        let namespace = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"fleetlog.system-key");
        Uuid::new_v5(&namespace, self.0.as_bytes())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh secret for a system: 256 random bits as 64 hex digits (no `:`, safe in HTTP Basic).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The argon2id hash (PHC string) of a secret, with a fresh salt. Slow on purpose: call it off
/// the async runtime (`spawn_blocking`).
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2id with default parameters hashes any secret")
        .to_string()
}

/// Whether `secret` matches the argon2 hash `phc`. A malformed hash matches nothing. Slow on
/// purpose: call it off the async runtime.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok()
    })
}

/// A fresh tenant API token: the prefix and 256 random bits as hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The hex SHA-256 under which a tenant token is stored and looked up.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_give_a_stable_id() {
        let key = SystemKey::generate();
        assert_eq!(key.as_str().len(), "FL-XXXX-XXXX-XXXX".len());
        let parsed = SystemKey::parse(&key.as_str().to_lowercase()).unwrap();
        assert_eq!(parsed, key);
        assert_eq!(parsed.system_id(), key.system_id());
        assert_ne!(SystemKey::generate().system_id(), key.system_id());
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "FL-",
            "FL-AAAA-BBBB",
            "XX-AAAA-BBBB-CCCC",
            "FL-AAAA-BBBB-CCCI",
            "FL-AAAA-BBBB-CCCCC",
        ] {
            assert!(SystemKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let secret = generate_secret();
        let hash = hash_secret(&secret);
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret(&secret, &hash));
        assert!(!verify_secret(&generate_secret(), &hash));
        assert!(!verify_secret(&secret, "not a hash"));
    }

    #[test]
    fn tokens_are_prefixed_and_hash_stably() {
        let token = generate_token();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token_hash(&token), token_hash(&token));
        assert_ne!(token_hash(&token), token_hash(&generate_token()));
    }
}
