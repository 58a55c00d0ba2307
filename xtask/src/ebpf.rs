//! Building the XDP object.
//!
//! The object is compiled for `bpfel-unknown-none` and linked by `bpf-linker`, which must be built
//! against the same LLVM major version as the rustc that compiles the crate. Two routes provide
//! such a toolchain:
//!
//! - the Debian route: Debian's own Rust (`/usr/bin/rustc`) ships a prebuilt `core` for the BPF
//!   target, so no `rust-src` is needed. `RUSTC_BOOTSTRAP=1` unlocks the unstable features that
//!   aya-ebpf uses. On a Debian-family host, as root, missing pieces are installed here.
//! - the nightly route, which aya documents: a rustup nightly toolchain with `rust-src`, and
//!   `cargo build -Z build-std=core`.
//!
//! The order of preference is: a complete Debian route, then a complete nightly route, then a
//! Debian route after installing what it lacks. Otherwise the build stops with the commands to
//! run.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The Rust compiler of the Debian route.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// The cargo of the Debian route.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian packages of the Debian route besides `llvm-NN-dev`.
const DEBIAN_RUST_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// The bpf-linker release that the Debian route installs. It supports LLVM 21, 22 and 23.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The target triple of the object.
const BPF_TARGET: &str = "bpfel-unknown-none";
/// The Cargo package and binary name of the XDP program.
const EBPF_PACKAGE: &str = "firewall-ebpf";

/// Builds the XDP object and returns its path.
///
/// The object lands in `<workspace>/target/ebpf/bpfel-unknown-none/release/firewall-ebpf`, where
/// the agent's build script looks for it.
///
/// # Errors
///
/// Fails when no route can build the object (the message lists the commands that set one up),
/// when an installation step fails, or when the build itself fails.
pub fn build() -> Result<PathBuf> {
    let workspace = workspace_root()?;
    let target_dir = workspace.join("target").join("ebpf");

    let route = choose_route()?;
    let object = match route {
        Route::Debian(toolchain) => build_with_debian(&workspace, &target_dir, &toolchain)?,
        Route::Nightly(toolchain) => build_with_nightly(&workspace, &target_dir, &toolchain)?,
    };

    let size = fs::metadata(&object)
        .with_context(|| format!("the build succeeded but {} is missing", object.display()))?
        .len();
    println!("ebpf: object {} ({size} bytes)", object.display());
    Ok(object)
}

/// A toolchain that can build the object.
enum Route {
    Debian(DebianToolchain),
    Nightly(NightlyToolchain),
}

struct DebianToolchain {
    llvm_major: u32,
    bpf_linker: PathBuf,
}

struct NightlyToolchain {
    bpf_linker: PathBuf,
}

/// The state of the Debian route on this machine.
struct DebianCheck {
    /// LLVM major version of `/usr/bin/rustc`, or `None` when it is missing.
    llvm_major: Option<u32>,
    /// Debian packages the route lacks.
    missing_packages: Vec<String>,
    /// A bpf-linker built against `llvm_major`, or why there is none.
    bpf_linker: Result<PathBuf, String>,
}

impl DebianCheck {
    fn run() -> Result<Self> {
        let llvm_major = rustc_llvm_major(Command::new(DEBIAN_RUSTC)).ok();
        let mut missing_packages = Vec::new();

        if !Path::new(DEBIAN_RUSTC).exists() {
            missing_packages.push("rustc-web".to_owned());
        }
        if !Path::new(DEBIAN_CARGO).exists() {
            missing_packages.push("cargo-web".to_owned());
        }
        if llvm_major.is_none() || !has_bpf_core_library()? {
            missing_packages.push("libstd-rust-web-dev-bpf".to_owned());
        }

        let bpf_linker = match llvm_major {
            Some(llvm_major) => check_bpf_linker(llvm_major),
            None => Err(format!(
                "the LLVM version of {DEBIAN_RUSTC} is not known yet"
            )),
        };
        if let (Some(llvm_major), Err(_)) = (llvm_major, &bpf_linker)
            && !has_llvm_dev(llvm_major)
        {
            missing_packages.push(format!("llvm-{llvm_major}-dev"));
        }

        Ok(Self {
            llvm_major,
            missing_packages,
            bpf_linker,
        })
    }

    /// Describes what is missing, for messages.
    fn describe_gaps(&self) -> String {
        let mut gaps = Vec::new();
        if !self.missing_packages.is_empty() {
            gaps.push(format!("packages {}", self.missing_packages.join(", ")));
        }
        if let Err(reason) = &self.bpf_linker {
            gaps.push(reason.clone());
        }
        gaps.join("; ")
    }

    /// Returns the toolchain when nothing is missing.
    fn toolchain(&self) -> Option<DebianToolchain> {
        if !self.missing_packages.is_empty() {
            return None;
        }
        Some(DebianToolchain {
            llvm_major: self.llvm_major?,
            bpf_linker: self.bpf_linker.clone().ok()?,
        })
    }
}

fn choose_route() -> Result<Route> {
    let debian = DebianCheck::run()?;
    if let Some(toolchain) = debian.toolchain() {
        println!(
            "ebpf: toolchain: Debian ({DEBIAN_RUSTC} with LLVM {}, {})",
            toolchain.llvm_major,
            toolchain.bpf_linker.display()
        );
        return Ok(Route::Debian(toolchain));
    }

    match nightly_toolchain() {
        Ok(toolchain) => {
            println!(
                "ebpf: toolchain: rustup nightly with rust-src ({})",
                toolchain.bpf_linker.display()
            );
            return Ok(Route::Nightly(toolchain));
        }
        Err(reason) => println!("ebpf: nightly toolchain unavailable: {reason}"),
    }

    if is_debian_family() && is_root()? {
        println!("ebpf: toolchain: Debian, after installing what it lacks");
        return install_debian_toolchain(debian).map(Route::Debian);
    }

    bail!("{}", no_route_message(&debian))
}

/// Installs the Debian packages and the bpf-linker that `check` found missing.
fn install_debian_toolchain(mut check: DebianCheck) -> Result<DebianToolchain> {
    // The LLVM version to match comes from /usr/bin/rustc, so the Rust packages go in first.
    if check.llvm_major.is_none() {
        apt_install(&DEBIAN_RUST_PACKAGES.map(str::to_owned))?;
        check = DebianCheck::run()?;
    }
    let llvm_major = check.llvm_major.with_context(|| {
        format!("{DEBIAN_RUSTC} reports no LLVM version after installing the Rust packages")
    })?;

    if !check.missing_packages.is_empty() {
        apt_install(&check.missing_packages)?;
    }
    if let Err(reason) = &check.bpf_linker {
        println!(
            "ebpf: installing bpf-linker {BPF_LINKER_VERSION} for LLVM {llvm_major}: {reason}"
        );
        install_bpf_linker(llvm_major)?;
    }

    let check = DebianCheck::run()?;
    match check.toolchain() {
        Some(toolchain) => Ok(toolchain),
        None => bail!(
            "the Debian route is still incomplete after installing: {}",
            check.describe_gaps()
        ),
    }
}

fn apt_install(packages: &[String]) -> Result<()> {
    println!("ebpf: installing {}", packages.join(" "));
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    crate::packages::apt_install(&packages)
}

fn install_bpf_linker(llvm_major: u32) -> Result<()> {
    let llvm_prefix = format!("/usr/lib/llvm-{llvm_major}");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut search_path = vec![PathBuf::from(&llvm_prefix).join("bin")];
    search_path.extend(env::split_paths(&path));
    let search_path = env::join_paths(search_path).context("joining PATH for cargo install")?;

    // bpf-linker 0.13's build script reads LLVM_PREFIX, or else finds llvm-config on PATH. With
    // the features used here, llvm-sys links nothing itself, so its own LLVM_SYS_<version>_PREFIX
    // variable is not read.
    let mut command = Command::new(host_cargo());
    command
        .args(["install", "--force"])
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{llvm_major}"))
        .env("PATH", search_path)
        .env("LLVM_PREFIX", &llvm_prefix);
    run(&mut command)
}

fn build_with_debian(
    workspace: &Path,
    target_dir: &Path,
    toolchain: &DebianToolchain,
) -> Result<PathBuf> {
    println!(
        "ebpf: building {EBPF_PACKAGE} with {DEBIAN_CARGO} (LLVM {})",
        toolchain.llvm_major
    );
    let mut command = Command::new(DEBIAN_CARGO);
    command
        .args(["build", "--release", "--target", BPF_TARGET])
        .current_dir(workspace.join(EBPF_PACKAGE))
        .env("RUSTC", DEBIAN_RUSTC)
        // aya-ebpf enables `asm_experimental_arch`, which a stable rustc accepts only so.
        .env("RUSTC_BOOTSTRAP", "1");
    configure_build(&mut command, target_dir, &toolchain.bpf_linker);
    run(&mut command)?;
    Ok(object_path(target_dir))
}

fn build_with_nightly(
    workspace: &Path,
    target_dir: &Path,
    toolchain: &NightlyToolchain,
) -> Result<PathBuf> {
    println!("ebpf: building {EBPF_PACKAGE} with rustup nightly and -Z build-std=core");
    let mut command = Command::new("rustup");
    command
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--release",
            "--target",
            BPF_TARGET,
        ])
        .args(["-Z", "build-std=core"])
        .current_dir(workspace.join(EBPF_PACKAGE));
    configure_build(&mut command, target_dir, &toolchain.bpf_linker);
    run(&mut command)?;
    Ok(object_path(target_dir))
}

/// Points the build at the target directory and at the bpf-linker that was checked, whatever
/// else is on PATH.
fn configure_build(command: &mut Command, target_dir: &Path, bpf_linker: &Path) {
    command
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", bpf_linker)
        // Set by the rustup proxy that runs xtask. It must not pick the toolchain of the build.
        .env_remove("RUSTUP_TOOLCHAIN");
}

fn object_path(target_dir: &Path) -> PathBuf {
    target_dir
        .join(BPF_TARGET)
        .join("release")
        .join(EBPF_PACKAGE)
}

/// Checks the nightly route: rustup, a nightly toolchain with `rust-src`, and a bpf-linker whose
/// LLVM major matches the nightly rustc's when `ldd` shows it. Returns why the route is unusable.
fn nightly_toolchain() -> Result<NightlyToolchain, String> {
    let installed = capture(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .map_err(|error| format!("{error:#}"))?;
    if !installed.status.success() {
        return Err("rustup has no nightly toolchain".to_owned());
    }
    let has_rust_src = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == "rust-src");
    if !has_rust_src {
        return Err("the nightly toolchain has no rust-src component".to_owned());
    }

    let mut rustc = Command::new("rustup");
    rustc.args(["run", "nightly", "rustc"]);
    let llvm_major = rustc_llvm_major(rustc).map_err(|error| format!("{error:#}"))?;

    let bpf_linker = find_bpf_linker().ok_or("bpf-linker is not installed")?;
    match linked_llvm_major(&bpf_linker) {
        Some(major) if major != llvm_major => Err(format!(
            "{} uses LLVM {major} but nightly rustc uses LLVM {llvm_major}",
            bpf_linker.display()
        )),
        // NOTE: a bpf-linker with LLVM linked in statically cannot be checked; a mismatch then
        // shows up as a link error.
        _ => Ok(NightlyToolchain { bpf_linker }),
    }
}

/// Returns the LLVM major version that `rustc -vV` reports.
fn rustc_llvm_major(mut rustc: Command) -> Result<u32> {
    let output = capture(rustc.arg("-vV"))?;
    if !output.status.success() {
        bail!("`{}` failed with {}", describe(&rustc), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_llvm_major(&stdout)
        .with_context(|| format!("`{}` printed no `LLVM version:` line", describe(&rustc)))
}

fn parse_llvm_major(rustc_version: &str) -> Option<u32> {
    let version = rustc_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))?;
    version.trim().split('.').next()?.parse().ok()
}

/// Checks whether Debian's BPF build of `core` is in the sysroot of `/usr/bin/rustc`.
fn has_bpf_core_library() -> Result<bool> {
    let output = capture(Command::new(DEBIAN_RUSTC).args(["--print", "sysroot"]))?;
    if !output.status.success() {
        return Ok(false);
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let library_dir = sysroot.join("lib/rustlib").join(BPF_TARGET).join("lib");
    let Ok(entries) = fs::read_dir(&library_dir) else {
        return Ok(false);
    };
    let has_core = entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.starts_with("libcore-") && name.ends_with(".rlib")
    });
    Ok(has_core)
}

/// Checks whether the LLVM development files that building bpf-linker needs are installed.
fn has_llvm_dev(llvm_major: u32) -> bool {
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{llvm_major}"));
    prefix.join("bin/llvm-config").exists() && prefix.join("lib/libLLVM.so").exists()
}

/// Finds a bpf-linker whose LLVM major is `llvm_major`. Returns why there is none.
fn check_bpf_linker(llvm_major: u32) -> Result<PathBuf, String> {
    let bpf_linker = find_bpf_linker().ok_or("bpf-linker is not installed")?;

    match linked_llvm_major(&bpf_linker) {
        Some(major) if major == llvm_major => Ok(bpf_linker),
        Some(major) => Err(format!(
            "{} uses LLVM {major} but {DEBIAN_RUSTC} uses LLVM {llvm_major}",
            bpf_linker.display()
        )),
        None => Err(format!(
            "cannot tell which LLVM {} uses because it does not link libLLVM dynamically",
            bpf_linker.display()
        )),
    }
}

/// Looks for `bpf-linker` in cargo's install directory first, then on PATH.
fn find_bpf_linker() -> Option<PathBuf> {
    let cargo_bin = cargo_home().map(|home| home.join("bin"));
    let path = env::var_os("PATH").unwrap_or_default();
    cargo_bin
        .into_iter()
        .chain(env::split_paths(&path))
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}

/// Reads the LLVM major version of the libLLVM that `binary` loads, from `ldd`.
fn linked_llvm_major(binary: &Path) -> Option<u32> {
    let output = capture(Command::new("ldd").arg(binary)).ok()?;
    if !output.status.success() {
        return None;
    }
    parse_libllvm_major(&String::from_utf8_lossy(&output.stdout))
}

/// Finds the major version in a libLLVM soname of `ldd` output: `libLLVM.so.22.1`,
/// `libLLVM.so.22` or `libLLVM-22.so`.
fn parse_libllvm_major(ldd_output: &str) -> Option<u32> {
    ldd_output.lines().find_map(|line| {
        let soname = line.split_whitespace().next()?;
        let version = soname
            .strip_prefix("libLLVM.so.")
            .or_else(|| soname.strip_prefix("libLLVM-")?.strip_suffix(".so"))?;
        version.split('.').next()?.parse().ok()
    })
}

fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// Returns the cargo that runs this xtask, for `cargo install`.
fn host_cargo() -> PathBuf {
    env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

fn is_debian_family() -> bool {
    Path::new("/etc/debian_version").exists()
}

/// Checks whether the effective user is root, from `/proc/self/status`.
fn is_root() -> Result<bool> {
    let status =
        fs::read_to_string("/proc/self/status").context("failed to read /proc/self/status")?;
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .context("/proc/self/status has no `Uid:` line with an effective uid")?;
    Ok(effective_uid == "0")
}

fn no_route_message(debian: &DebianCheck) -> String {
    let llvm = debian
        .llvm_major
        .map_or_else(|| "NN".to_owned(), |major| major.to_string());
    let mut message = format!(
        "no toolchain on this machine can build the XDP object. The Debian route lacks: {}.\n",
        debian.describe_gaps()
    );
    message += &format!(
        "On Debian or Ubuntu, as root, run:\n  \
         apt-get install -y {} llvm-{llvm}-dev\n  \
         PATH=/usr/lib/llvm-{llvm}/bin:$PATH LLVM_PREFIX=/usr/lib/llvm-{llvm} \
         cargo install --force bpf-linker@{BPF_LINKER_VERSION} --no-default-features \
         --features llvm-{llvm}\n",
        DEBIAN_RUST_PACKAGES.join(" ")
    );
    if debian.llvm_major.is_none() {
        message += "where NN is the LLVM major version that `/usr/bin/rustc -vV` prints.\n";
    }
    message += "Elsewhere, run:\n  \
                rustup toolchain install nightly --component rust-src\n  \
                cargo install bpf-linker\n\
                Then run `cargo xtask build-ebpf` again.";
    message
}

fn workspace_root() -> Result<PathBuf> {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", xtask_dir.display()))
}

/// Runs `command` with inherited output and fails, naming it, unless it succeeds.
fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to start `{}`", describe(command)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", describe(command));
    }
    Ok(())
}

/// Runs `command` and collects its output. Only a failure to start it is an error.
fn capture(command: &mut Command) -> Result<Output> {
    command
        .output()
        .with_context(|| format!("failed to start `{}`", describe(command)))
}

/// Renders `command` as a shell-like line for messages.
fn describe(command: &Command) -> String {
    let program = command.get_program();
    std::iter::once(program)
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_version() {
        let output = "rustc 1.96.0 (ac68faa20 2026-05-25)\n\
                      host: x86_64-unknown-linux-gnu\n\
                      release: 1.96.0\n\
                      LLVM version: 22.1.8\n";
        assert_eq!(parse_llvm_major(output), Some(22));
    }

    #[test]
    fn llvm_major_missing_from_rustc_version() {
        assert_eq!(parse_llvm_major("rustc 1.96.0\nrelease: 1.96.0\n"), None);
    }

    #[test]
    fn libllvm_major_from_ldd() {
        let debian = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007fb0)\n";
        assert_eq!(parse_libllvm_major(debian), Some(22));

        let upstream = "\tlibLLVM-21.so => /usr/lib/libLLVM-21.so (0x00007fb0)\n";
        assert_eq!(parse_libllvm_major(upstream), Some(21));
    }

    #[test]
    fn libllvm_major_absent_when_static() {
        let static_build = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fb0)\n";
        assert_eq!(parse_libllvm_major(static_build), None);
    }

    #[test]
    fn no_route_message_names_the_commands() {
        let debian = DebianCheck {
            llvm_major: Some(22),
            missing_packages: vec!["llvm-22-dev".to_owned()],
            bpf_linker: Err("bpf-linker is not installed".to_owned()),
        };
        let message = no_route_message(&debian);
        assert!(message.contains("packages llvm-22-dev; bpf-linker is not installed"));
        assert!(message.contains("apt-get install -y rustc-web cargo-web"));
        assert!(message.contains("LLVM_PREFIX=/usr/lib/llvm-22"));
        assert!(message.contains("--features llvm-22"));
        assert!(message.contains("rustup toolchain install nightly --component rust-src"));
        assert!(!message.contains("NN"));
    }
}
