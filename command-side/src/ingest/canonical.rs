//! The SHA-256 of an inventory document in canonical form (object key order does not matter).
