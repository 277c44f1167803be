//! Two jobs, both about `../../migrations`:
//!
//! - `embed_migrations!` includes each migration file, so edits to existing files rebuild this
//!   crate, but a newly added migration directory would not: watch the whole directory (the build
//!   script diesel_migrations documents).
//! - Fingerprint the migration files into `WA_MIGRATIONS_FINGERPRINT` (see
//!   `migrate::MIGRATIONS_FINGERPRINT`). Computing it here, in the same build that embeds the
//!   migrations, guarantees the fingerprint describes exactly the migrations compiled in.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const MIGRATIONS_DIR: &str = "../../migrations";

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={MIGRATIONS_DIR}");

    let root = Path::new(MIGRATIONS_DIR);
    let mut files = Vec::new();
    collect_files(root, &mut files)?;
    files.sort();

    // FNV-1a (64 bit): a cache key for the test kit's template database, not a security
    // boundary, so no hashing crate is pulled into the build.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for path in &files {
        let relative = path.strip_prefix(root).unwrap_or(path);
        feed(relative.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&fs::read(path)?);
        feed(&[0]);
    }
    println!("cargo:rustc-env=WA_MIGRATIONS_FINGERPRINT={hash:016x}");
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
