//! Embeds the XDP object that `cargo xtask build-ebpf` writes.
//!
//! The object is built with its own toolchain, outside this workspace, so this script only copies
//! it into `OUT_DIR`. Without it the agent still builds, with an empty object that makes loading
//! fail with a message on how to build it, so the agent's other tests run on any machine.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// The object's path relative to the workspace root, as `cargo xtask build-ebpf` writes it.
const OBJECT_PATH: &str = "target/ebpf/bpfel-unknown-none/release/firewall-ebpf";
/// File name of the copy in `OUT_DIR` that `kernel::loader` includes.
const EMBEDDED_NAME: &str = "firewall-ebpf.o";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("firewall-agent has no parent directory to be the workspace root")?;
    let object = workspace.join(OBJECT_PATH);
    let embedded = out_dir.join(EMBEDDED_NAME);

    println!("cargo::rerun-if-changed={}", object.display());
    embed(&object, &embedded)
}

fn embed(object: &Path, embedded: &Path) -> Result<(), Box<dyn Error>> {
    if object.is_file() {
        fs::copy(object, embedded).map_err(|error| {
            format!(
                "failed to copy the XDP object {} to {}: {error}",
                object.display(),
                embedded.display()
            )
        })?;
        return Ok(());
    }

    println!(
        "cargo::warning=the XDP object {} is missing, so the agent cannot load its XDP program; \
         build it with `cargo xtask build`",
        object.display()
    );
    fs::write(embedded, []).map_err(|error| {
        format!(
            "failed to write the empty object {}: {error}",
            embedded.display()
        )
    })?;
    Ok(())
}
