//! Fleetlog's SQL migrations, embedded in the binary.
//!
//! The `.sql` files beside this crate's `Cargo.toml` are the migrations themselves (sqlx's
//! `<version>_<description>.sql` naming); tests point `#[sqlx::test(migrations = "../migrations")]`
//! at the same folder, so the schema under test is the one that ships.

/// Every migration of the event store and the read models, in order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
