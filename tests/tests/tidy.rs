//! Tidy: every source file of the workspace opens with a `//!` comment that
//! says what it owns, so the map of `docs/ARCHITECTURE.md` continues in code;
//! and every crate directory is named in that map.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let root = workspace();
    let mut files = Vec::new();
    for krate in ["state", "orchestrator", "workflows", "cli", "lab", "lazyfs"] {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 10, "found only {} files", files.len());
    let mut missing = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // Unit-test submodules (`tests.rs`) are exempt: their parent documents them.
        if name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
        if !first.starts_with("//!") {
            missing.push(file.strip_prefix(&root).unwrap_or(file).display().to_string());
        }
    }
    assert!(missing.is_empty(), "these files do not open with a `//!` doc comment: {missing:#?}");
}

#[test]
fn the_architecture_map_names_every_crate() {
    let root = workspace();
    let map = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md exists");
    for krate in ["dr-state", "dr-orchestrator", "dr-workflows", "dr-cli", "dr-lab", "dr-lazyfs", "dr-tests"] {
        assert!(map.contains(krate), "docs/ARCHITECTURE.md does not mention {krate}");
    }
    assert!(map.contains("**Invariant:**"), "the map states its invariants");
}
