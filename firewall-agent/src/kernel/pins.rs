//! Pins of the maps and XDP links in bpffs, so that drops continue while the agent is stopped or
//! restarting, and a restarted agent finds the bans of the previous one.
//!
//! The pin directory contains one pin per map (named as in `firewall-common`), one
//! `link_<interface>` per attachment, an empty `linkmode_<mode>_<interface>` directory that
//! records the mode of each link, and an empty `schema_v<N>` directory that records the schema
//! version, because bpffs accepts no regular files. An agent never reuses pins whose
//! schema version or map capacities differ from its own: it rejects them with a message that
//! names the command that removes them.

use std::io;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya::programs::links::{FdLink, PinnedLink};
use firewall_common::{
    MAP_ALLOW_SUMMARY, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BAN_RANGES_V4, MAP_BAN_RANGES_V6,
    MAP_BAN_TABLE_STATE, MAP_BAN_TABLE_V4, MAP_BAN_TABLE_V6, MAP_BANS_V4, MAP_BANS_V6,
    MAP_SOURCE_STATS, MAP_VERDICTS, PIN_SCHEMA_VERSION, Verdict,
};
use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use super::{AttachedMode, KernelError, KernelSettings};

/// Prefix of the directory whose name records the schema version: `schema_v1` for version 1.
const SCHEMA_PREFIX: &str = "schema_v";
/// Prefix of the pinned link of one interface.
const LINK_PREFIX: &str = "link_";
/// Prefix of the empty directory that records the mode of the pinned link of one interface:
/// `linkmode_driver_eth0`.
const LINK_MODE_PREFIX: &str = "linkmode_";
/// Conventional mount point of bpffs, where the agent mounts it when missing.
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

/// Returns every pinned map with the capacity the agent expects it to have.
fn pinned_maps(settings: &KernelSettings) -> [(&'static str, u32); 12] {
    [
        (MAP_BANS_V4, settings.bans_max_entries),
        (MAP_BAN_TABLE_V4, settings.ban_table_buckets()),
        (MAP_BAN_TABLE_V6, settings.ban_table_buckets()),
        (MAP_BAN_TABLE_STATE, 1),
        (MAP_BANS_V6, settings.bans_max_entries),
        (MAP_BAN_RANGES_V4, settings.ban_ranges_max_entries),
        (MAP_BAN_RANGES_V6, settings.ban_ranges_max_entries),
        (MAP_ALLOW_V4, settings.allow_max_entries),
        (MAP_ALLOW_V6, settings.allow_max_entries),
        (MAP_ALLOW_SUMMARY, 1),
        (MAP_SOURCE_STATS, settings.source_stats_max_entries),
        (MAP_VERDICTS, Verdict::COUNT),
    ]
}

/// A checked pin directory on bpffs.
#[derive(Clone, Debug)]
pub(crate) struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Mounts bpffs if needed, creates the directory, and checks the schema version and the
    /// capacity of every map already pinned there. Writes the schema version into an empty
    /// directory.
    pub(crate) fn prepare(path: &Path, settings: &KernelSettings) -> Result<Self, KernelError> {
        ensure_bpffs(path)?;
        std::fs::create_dir_all(path).map_err(pin_io(path, "create the pin directory"))?;

        let pins = Self {
            path: path.to_owned(),
        };
        pins.check_schema()?;
        for (name, configured) in pinned_maps(settings) {
            pins.check_capacity(name, configured)?;
        }
        Ok(pins)
    }

    /// Opens a pin directory that an agent filled, without creating or changing anything, for
    /// `fwctl` while the agent is stopped. Returns the settings the pinned maps were created
    /// with: their capacities, pinning on, and `path` as the pin directory.
    pub(crate) fn open_existing(path: &Path) -> Result<(Self, KernelSettings), KernelError> {
        let pins = Self {
            path: path.to_owned(),
        };
        if !pins.map_path(MAP_BANS_V4).exists() {
            return Err(KernelError::NoPins {
                path: path.to_owned(),
            });
        }
        pins.check_schema()?;

        let capacity = |name: &'static str| -> Result<u32, KernelError> {
            MapInfo::from_pin(pins.map_path(name))
                .map(|info| info.max_entries())
                .map_err(|source| KernelError::MapLayout { name, source })
        };
        let settings = KernelSettings {
            bans_max_entries: capacity(MAP_BANS_V4)?,
            // Twice the bucket count gives back the same bucket count.
            ban_table_entries: capacity(MAP_BAN_TABLE_V4)?.saturating_mul(2),
            ban_ranges_max_entries: capacity(MAP_BAN_RANGES_V4)?,
            allow_max_entries: capacity(MAP_ALLOW_V4)?,
            source_stats_max_entries: capacity(MAP_SOURCE_STATS)?,
            pin: true,
            pin_dir: path.to_owned(),
            ..KernelSettings::default()
        };
        Ok((pins, settings))
    }

    /// Returns the pin path of the map `name`.
    pub(crate) fn map_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Returns the pin path of the XDP link on `interface`.
    pub(crate) fn link_path(&self, interface: &str) -> PathBuf {
        self.path.join(format!("{LINK_PREFIX}{interface}"))
    }

    /// Returns the mode the pinned link on `interface` was attached in, as recorded by
    /// [`record_link_mode`](Self::record_link_mode). `None` when nothing is recorded.
    pub(crate) fn link_mode(&self, interface: &str) -> Option<AttachedMode> {
        [AttachedMode::Driver, AttachedMode::Generic]
            .into_iter()
            .find(|mode| self.link_mode_path(interface, *mode).is_dir())
    }

    /// Records that the pinned link on `interface` was attached in `mode`, replacing any
    /// earlier record.
    pub(crate) fn record_link_mode(
        &self,
        interface: &str,
        mode: AttachedMode,
    ) -> Result<(), KernelError> {
        for other in [AttachedMode::Driver, AttachedMode::Generic] {
            let path = self.link_mode_path(interface, other);
            if other != mode && path.is_dir() {
                std::fs::remove_dir(&path).map_err(pin_io(&path, "remove the link mode record"))?;
            }
        }
        let path = self.link_mode_path(interface, mode);
        match std::fs::create_dir(&path) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => {
                Err(pin_io(&path, "record the link mode")(error))
            }
            _ => Ok(()),
        }
    }

    fn link_mode_path(&self, interface: &str, mode: AttachedMode) -> PathBuf {
        self.path
            .join(format!("{LINK_MODE_PREFIX}{}_{interface}", mode.label()))
    }

    fn check_schema(&self) -> Result<(), KernelError> {
        let mut found = None;
        let mut has_pins = false;
        for entry in std::fs::read_dir(&self.path).map_err(pin_io(&self.path, "list"))? {
            let entry = entry.map_err(pin_io(&self.path, "list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.strip_prefix(SCHEMA_PREFIX) {
                Some(version) => found = Some(version.to_owned()),
                None => has_pins = true,
            }
        }

        match found {
            Some(version) if version == PIN_SCHEMA_VERSION.to_string() => Ok(()),
            Some(version) => Err(KernelError::PinSchemaMismatch {
                path: self.path.clone(),
                found: version,
            }),
            None if has_pins => Err(KernelError::PinSchemaMismatch {
                path: self.path.clone(),
                found: "none".to_owned(),
            }),
            None => {
                let marker = self
                    .path
                    .join(format!("{SCHEMA_PREFIX}{PIN_SCHEMA_VERSION}"));
                std::fs::create_dir(&marker)
                    .map_err(pin_io(&marker, "create the schema version directory"))
            }
        }
    }

    fn check_capacity(&self, name: &'static str, configured: u32) -> Result<(), KernelError> {
        let path = self.map_path(name);
        if !path.exists() {
            return Ok(());
        }
        let info =
            MapInfo::from_pin(&path).map_err(|source| KernelError::MapLayout { name, source })?;
        if info.max_entries() != configured {
            return Err(KernelError::PinnedCapacity {
                map: name,
                path,
                pinned: info.max_entries(),
                configured,
            });
        }
        Ok(())
    }
}

/// Removes every pin in `path`: the links first, which detaches the program from their
/// interfaces, then the maps, which frees them once no program uses them. Returns the
/// interfaces that were detached. A missing directory is not an error.
///
/// # Errors
///
/// Fails when a pin cannot be opened or removed. A running agent keeps its own handles, so
/// stop it first.
pub fn remove_pins(path: &Path) -> Result<Vec<String>, KernelError> {
    let Some(entries) = pin_entries(path)? else {
        return Ok(Vec::new());
    };

    let mut detached = Vec::new();
    let mut others = Vec::new();
    for (name, pin) in entries {
        match name.strip_prefix(LINK_PREFIX) {
            Some(interface) => {
                unpin_link(&pin)?;
                detached.push(interface.to_owned());
            }
            None => others.push(pin),
        }
    }
    for other in others {
        let removed = if other.is_dir() {
            std::fs::remove_dir(&other)
        } else {
            std::fs::remove_file(&other)
        };
        removed.map_err(pin_io(&other, "remove"))?;
    }
    std::fs::remove_dir(path).map_err(pin_io(path, "remove the pin directory"))?;

    detached.sort();
    Ok(detached)
}

/// A process other than this one with a descriptor of a link pinned in the pin directory, such
/// as the agent that attached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHolder {
    /// Process id.
    pub pid: u32,
    /// Interface whose pinned link the process has open.
    pub interface: String,
}

/// Returns the other processes that hold a descriptor of a link pinned in `path`. Removing the
/// pins while one does would leave the program attached until that process exits, so
/// `fwctl detach` checks this before it removes anything. A missing directory contains no links.
///
/// # Errors
///
/// [`KernelError`] when the directory or a pinned link cannot be read.
pub fn link_holders(path: &Path) -> Result<Vec<LinkHolder>, KernelError> {
    let mut links = Vec::new();
    for (name, pin) in pin_entries(path)?.unwrap_or_default() {
        let Some(interface) = name.strip_prefix(LINK_PREFIX) else {
            continue;
        };
        let link: FdLink = PinnedLink::from_pin(&pin)
            .map_err(|source| KernelError::OpenPinnedLink {
                path: pin.clone(),
                source,
            })?
            .into();
        let id = link
            .info()
            .map_err(|source| KernelError::OpenPinnedLink { path: pin, source })?
            .id();
        links.push((id, interface.to_owned()));
    }
    if links.is_empty() {
        return Ok(Vec::new());
    }

    let own = std::process::id();
    let mut holders = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Ok(holders);
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        for id in held_link_ids(pid) {
            if let Some((_, interface)) = links.iter().find(|(link, _)| *link == id) {
                holders.push(LinkHolder {
                    pid,
                    interface: interface.clone(),
                });
            }
        }
    }
    Ok(holders)
}

/// Returns the name and path of each entry of the pin directory `path`, or `None` when the
/// directory does not exist.
fn pin_entries(path: &Path) -> Result<Option<Vec<(String, PathBuf)>>, KernelError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(pin_io(path, "list the pin directory")(error)),
    };
    let mut pins = Vec::new();
    for entry in entries {
        let entry = entry.map_err(pin_io(path, "list the pin directory"))?;
        pins.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(Some(pins))
}

/// Returns the ids of the BPF links that process `pid` has descriptors of. A process that ends
/// or whose descriptors cannot be read has none.
fn held_link_ids(pid: u32) -> Vec<u32> {
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for descriptor in descriptors.flatten() {
        let is_link = std::fs::read_link(descriptor.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link");
        if !is_link {
            continue;
        }
        let info = format!(
            "/proc/{pid}/fdinfo/{}",
            descriptor.file_name().to_string_lossy()
        );
        let id = std::fs::read_to_string(info).ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("link_id:"))
                .and_then(|value| value.trim().parse::<u32>().ok())
        });
        ids.extend(id);
    }
    ids
}

/// Removes the pinned link at `path`. Dropping the returned handle closes the last reference,
/// so the kernel detaches the program.
pub(crate) fn unpin_link(path: &Path) -> Result<(), KernelError> {
    let pinned = PinnedLink::from_pin(path).map_err(|source| KernelError::OpenPinnedLink {
        path: path.to_owned(),
        source,
    })?;
    let link: FdLink = pinned
        .unpin()
        .map_err(pin_io(path, "remove the pinned link"))?;
    drop(link);
    Ok(())
}

/// Checks that `path` lies on bpffs, mounting bpffs at [`BPFFS_MOUNT_POINT`] when the path is
/// below it and nothing is mounted there yet.
fn ensure_bpffs(path: &Path) -> Result<(), KernelError> {
    let mount_point = Path::new(BPFFS_MOUNT_POINT);
    if path.starts_with(mount_point) && !is_bpffs(mount_point) {
        mount(
            Some("bpf"),
            mount_point,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| KernelError::MountBpffs { source })?;
        tracing::info!(path = BPFFS_MOUNT_POINT, "mounted bpffs");
    }

    let existing = path.ancestors().find(|ancestor| ancestor.exists());
    if !existing.is_some_and(is_bpffs) {
        return Err(KernelError::PinDirNotBpffs {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|stat| stat.filesystem_type() == BPF_FS_MAGIC)
}

fn pin_io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> KernelError {
    let path = path.to_owned();
    move |source| KernelError::PinIo {
        path,
        action,
        source,
    }
}
