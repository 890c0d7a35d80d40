//! Rebuild the embedded migrations whenever a `.sql` file in this folder is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=.");
}
