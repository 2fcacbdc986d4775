//! The dependency-graph check of `cargo xtask lint`: the library crates' normal
//! dependency graphs must not pull in crates that only tests and benchmarks need.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The crates users depend on.
pub(crate) const LIBRARY_CRATES: [&str; 4] =
    ["neffos-protocol", "neffos", "neffos-redis", "neffos-nats"];

/// Crates that belong in `[dev-dependencies]` only.
const TEST_ONLY: [&str; 5] = [
    "proptest",
    "allocation-counter",
    "criterion",
    "testcontainers",
    "serde_bytes",
];

/// Names of the packages in `cargo tree` output printed with `--prefix none --format {p}`
/// (`name vX.Y.Z (path)` per line).
fn package_names(tree: &str) -> impl Iterator<Item = &str> {
    tree.lines().filter_map(|l| l.split_whitespace().next())
}

/// The test-only crates that appear in a `cargo tree` listing.
fn offenders(tree: &str) -> Vec<&str> {
    let mut found: Vec<&str> = package_names(tree)
        .filter(|name| TEST_ONLY.contains(name))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Fails when a library crate's normal dependency graph (all features) holds a test-only crate.
pub(crate) fn check(root: &Path) -> Result<()> {
    for krate in LIBRARY_CRATES {
        eprintln!("$ cargo tree -e normal -p {krate} --all-features");
        let out = Command::new("cargo")
            .args([
                "tree",
                "-e",
                "normal",
                "-p",
                krate,
                "--all-features",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .current_dir(root)
            .output()
            .context("cannot start `cargo tree`")?;
        if !out.status.success() {
            bail!(
                "`cargo tree -p {krate}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let bad = offenders(&tree);
        if !bad.is_empty() {
            bail!(
                "{krate} depends on test-only crates in its normal graph: {}; move them to [dev-dependencies]",
                bad.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_only_crates_by_exact_name() {
        let tree = "neffos v0.1.0 (/w/crates/core)\nbytes v1.10.1\nproptest v1.7.0\n\
                    proptest-derive v0.5.0\nserde_bytes v0.11.17\nproptest v1.7.0\n";
        assert_eq!(offenders(tree), ["proptest", "serde_bytes"]);
    }

    #[test]
    fn a_clean_tree_has_no_offenders() {
        let tree = "neffos v0.1.0 (/w/crates/core)\nbytes v1.10.1\ncriterion-plot v0.5.0\n";
        assert!(offenders(tree).is_empty());
    }
}
