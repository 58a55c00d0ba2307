//! Loading the embedded XDP object, attaching its program to interfaces and detaching it.

use std::error::Error;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{ProgramError, Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions};
use firewall_common::{
    FLOOR_PROGRAM_NAME, MAP_ALLOW_SUMMARY, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BAN_RANGES_V4,
    MAP_BAN_RANGES_V6, MAP_BAN_TABLE_STATE, MAP_BAN_TABLE_V4, MAP_BAN_TABLE_V6, MAP_BANS_V4,
    MAP_BANS_V6,
    MAP_SOURCE_STATS, MAP_VERDICTS, PROGRAM_NAME,
};

use super::maps::KernelMaps;
use super::pins::{PinDir, unpin_link};
use super::{AttachedMode, KernelError, KernelSettings, XdpMode};

/// The object built by `cargo xtask build-ebpf`, or an empty file when the agent was built
/// without it (see `build.rs`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall-ebpf.o"));

/// The loaded XDP program and its maps.
///
/// Without pins, dropping it detaches the program from every interface it was attached to, and
/// unloads it together with its maps, which drops every ban in the kernel. With pins, the program
/// stays attached through its pinned links and the maps stay in bpffs until
/// [`remove_pins`](super::remove_pins) removes them.
pub struct KernelFirewall {
    ebpf: Mutex<Ebpf>,
    maps: KernelMaps,
    attachments: Vec<Attachment>,
    pins: Option<PinDir>,
}

/// One interface the program is attached to.
struct Attachment {
    interface: String,
    mode: AttachedMode,
    link: AttachmentLink,
}

/// The handle that keeps an attachment alive.
enum AttachmentLink {
    /// Owned by the loaded program: detached when the program is dropped.
    Owned(XdpLinkId),
    /// Pinned in bpffs: stays attached after the agent exits.
    Pinned(PinnedLink),
}

impl KernelFirewall {
    /// Loads the embedded XDP object, sizes its maps from `settings` and loads the program into
    /// the kernel. The program is not attached to any interface yet.
    ///
    /// Call [`check_privileges`](super::check_privileges) first for a clearer error when the
    /// process lacks capabilities.
    ///
    /// # Errors
    ///
    /// Fails when the agent was built without the object or when a map capacity is zero. Also
    /// fails when the kernel rejects a map or the program, with the verifier log in the error, and
    /// when a map in the object does not match its layout in `firewall-common`.
    pub fn load(settings: &KernelSettings) -> Result<Self, KernelError> {
        Self::load_object(OBJECT, settings)
    }

    fn load_object(object: &[u8], settings: &KernelSettings) -> Result<Self, KernelError> {
        if object.is_empty() {
            return Err(KernelError::ObjectMissing);
        }
        validate_capacity("bans_max_entries", settings.bans_max_entries)?;
        validate_capacity("ban_table_entries", settings.ban_table_entries)?;
        validate_capacity("ban_ranges_max_entries", settings.ban_ranges_max_entries)?;
        validate_capacity("allow_max_entries", settings.allow_max_entries)?;
        validate_capacity(
            "source_stats_max_entries",
            settings.source_stats_max_entries,
        )?;

        let pins = if settings.pin {
            Some(PinDir::prepare(&settings.pin_dir, settings)?)
        } else {
            None
        };

        let mut loader = EbpfLoader::new();
        if let Some(pins) = &pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map_path(name));
            }
        }
        let mut ebpf = loader
            .map_max_entries(MAP_BANS_V4, settings.bans_max_entries)
            .map_max_entries(MAP_BAN_TABLE_V4, settings.ban_table_buckets())
            .map_max_entries(MAP_BAN_TABLE_V6, settings.ban_table_buckets())
            .map_max_entries(MAP_BANS_V6, settings.bans_max_entries)
            .map_max_entries(MAP_BAN_RANGES_V4, settings.ban_ranges_max_entries)
            .map_max_entries(MAP_BAN_RANGES_V6, settings.ban_ranges_max_entries)
            .map_max_entries(MAP_ALLOW_V4, settings.allow_max_entries)
            .map_max_entries(MAP_ALLOW_V6, settings.allow_max_entries)
            .map_max_entries(MAP_SOURCE_STATS, settings.source_stats_max_entries)
            .load(object)
            .map_err(|source| KernelError::Load { source })?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|source| KernelError::ProgramLoad {
            name: PROGRAM_NAME,
            source,
        })?;
        // Only for the log line: a kernel that does not report them still runs the program.
        let info = program.info().ok();
        let program_id = info.as_ref().map(|info| info.id());
        let verified_insns = info
            .as_ref()
            .and_then(|info| info.verified_instruction_count());
        let maps = KernelMaps::take_from(&mut ebpf, settings)?;

        tracing::info!(
            program = PROGRAM_NAME,
            program_id,
            verified_insns,
            bans_max_entries = settings.bans_max_entries,
            ban_ranges_max_entries = settings.ban_ranges_max_entries,
            allow_max_entries = settings.allow_max_entries,
            source_stats_max_entries = settings.source_stats_max_entries,
            pin_dir = pins
                .as_ref()
                .map(|_| settings.pin_dir.display().to_string()),
            "loaded the XDP program"
        );
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            maps,
            attachments: Vec::new(),
            pins,
        })
    }

    /// Attaches the program to `interface` and returns the mode it got.
    ///
    /// [`XdpMode::Auto`] tries driver mode first and falls back to generic mode, with a warning,
    /// when the driver rejects it.
    ///
    /// # Errors
    ///
    /// Fails when the interface does not exist, when the program is already attached to it by
    /// this instance, or when the kernel rejects the attachment in every mode tried.
    pub fn attach(&mut self, interface: &str, mode: XdpMode) -> Result<AttachedMode, KernelError> {
        if self
            .attachments
            .iter()
            .any(|attachment| attachment.interface == interface)
        {
            return Err(KernelError::AlreadyAttached {
                interface: interface.to_owned(),
            });
        }

        // A link pinned by an earlier agent may be attached to the interface. When it was made in
        // a mode this call accepts, the new program replaces the old one inside that link in one
        // step (BPF_LINK_UPDATE), so no frame passes unfiltered during a restart or an upgrade.
        // Otherwise, or when the kernel rejects the update, the old link is removed first.
        // NOTE: on that second path, frames pass unfiltered for the few microseconds between
        // the removal and the new attachment.
        let link_pin = self.pins.as_ref().map(|pins| pins.link_path(interface));
        if let (Some(pins), Some(path)) = (&self.pins, &link_pin)
            && path.exists()
        {
            let previous = pins.link_mode(interface);
            if let Some(previous) = previous.filter(|previous| mode.accepts(*previous)) {
                let mut ebpf = lock(&self.ebpf);
                let program = xdp_program(&mut ebpf)?;
                match update_pinned_link(program, interface, path.clone()) {
                    Ok(link) => {
                        drop(ebpf);
                        tracing::info!(
                            interface,
                            mode = previous.label(),
                            "replaced the program in the XDP link pinned by an earlier agent, in place"
                        );
                        self.attachments.push(Attachment {
                            interface: interface.to_owned(),
                            mode: previous,
                            link: AttachmentLink::Pinned(link),
                        });
                        return Ok(previous);
                    }
                    Err(error) => tracing::warn!(
                        interface,
                        error = %error_chain(&error),
                        "could not replace the program in the pinned XDP link; attaching a new link"
                    ),
                }
            }
            if path.exists() {
                unpin_link(path)?;
            }
            tracing::info!(
                interface,
                "replaced the XDP link pinned by an earlier agent"
            );
        }

        let mut ebpf = lock(&self.ebpf);
        let program = xdp_program(&mut ebpf)?;
        let (link, attached) = match mode {
            XdpMode::Driver => (
                attach_in(program, interface, AttachedMode::Driver)?,
                AttachedMode::Driver,
            ),
            XdpMode::Generic => (
                attach_in(program, interface, AttachedMode::Generic)?,
                AttachedMode::Generic,
            ),
            XdpMode::Auto => match attach_in(program, interface, AttachedMode::Driver) {
                Ok(link) => (link, AttachedMode::Driver),
                Err(KernelError::Attach { source, .. }) => {
                    tracing::warn!(
                        interface,
                        error = %error_chain(&source),
                        "driver mode XDP rejected, falling back to generic mode"
                    );
                    (
                        attach_in(program, interface, AttachedMode::Generic)?,
                        AttachedMode::Generic,
                    )
                }
                Err(error) => return Err(error),
            },
        };
        let link = match link_pin {
            Some(path) => AttachmentLink::Pinned(pin_link(program, link, interface, path)?),
            None => AttachmentLink::Owned(link),
        };
        drop(ebpf);
        if let Some(pins) = &self.pins {
            pins.record_link_mode(interface, attached)?;
        }

        tracing::info!(
            interface,
            mode = attached.label(),
            pinned = matches!(link, AttachmentLink::Pinned(_)),
            "attached the XDP program"
        );
        self.attachments.push(Attachment {
            interface: interface.to_owned(),
            mode: attached,
            link,
        });
        Ok(attached)
    }

    /// Attaches the program to every interface in `settings`, in order.
    ///
    /// # Errors
    ///
    /// Returns the first attach error, after detaching from the interfaces this call attached
    /// to, so a failed call leaves no partial attachment behind.
    pub fn attach_all(&mut self, settings: &KernelSettings) -> Result<(), KernelError> {
        let attached_before = self.attachments.len();
        for interface in &settings.interfaces {
            if let Err(error) = self.attach(interface, settings.mode) {
                // Detach errors are logged by `detach_from`; the attach error is the one to
                // report.
                let _ = self.detach_from(attached_before);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Detaches the program from every interface it is attached to, except where its link is
    /// pinned: such an attachment stays, so drops continue after the agent exits.
    ///
    /// # Errors
    ///
    /// Tries every interface, logs each failure, and returns the first.
    pub fn detach_all(&mut self) -> Result<(), KernelError> {
        let pins = self.pins.clone();
        self.attachments.retain(|attachment| {
            let pinned = matches!(attachment.link, AttachmentLink::Pinned(_));
            if !pinned {
                return true;
            }
            let pin_exists = pins
                .as_ref()
                .is_some_and(|pins| pins.link_path(&attachment.interface).exists());
            if pin_exists {
                tracing::info!(
                    interface = attachment.interface,
                    "the XDP program stays attached through its pinned link"
                );
            } else {
                tracing::warn!(
                    interface = attachment.interface,
                    "the pin of the XDP link was removed while the agent ran, so the program \
                     is detached when the agent exits"
                );
            }
            false
        });
        self.detach_from(0)
    }

    /// Returns the interfaces the program is attached to, with the mode each got.
    pub fn attachments(&self) -> Vec<(String, AttachedMode)> {
        self.attachments
            .iter()
            .map(|attachment| (attachment.interface.clone(), attachment.mode))
            .collect()
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN`, without any interface, and
    /// returns the XDP action it chose ([`XDP_PASS`](super::XDP_PASS) or
    /// [`XDP_DROP`](super::XDP_DROP)). The run updates the maps like a received frame would.
    ///
    /// # Errors
    ///
    /// Fails when the kernel rejects the run, for example for a frame shorter than an Ethernet
    /// header (14 bytes) or longer than a page.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, KernelError> {
        let mut ebpf = lock(&self.ebpf);
        let program = xdp_program(&mut ebpf)?;
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        let result = program
            .test_run(options)
            .map_err(|source| KernelError::TestRun { source })?;
        Ok(result.return_value)
    }

    /// Returns the kernel's id of the loaded firewall program, for tools such as
    /// `bpftool prog run id`. `None` when the kernel does not report it.
    pub fn program_id(&self) -> Option<u32> {
        let mut ebpf = lock(&self.ebpf);
        let program = xdp_program(&mut ebpf).ok()?;
        program.info().ok().map(|info| info.id())
    }

    /// Loads the object's floor program, which drops every frame without reading it, and
    /// returns its kernel id. Benchmarks run it to measure the fixed cost of a test run.
    ///
    /// # Errors
    ///
    /// Fails when the object lacks the program or the kernel rejects it.
    pub fn load_floor_program(&mut self) -> Result<u32, KernelError> {
        let mut ebpf = lock(&self.ebpf);
        let missing = KernelError::ProgramMissing {
            name: FLOOR_PROGRAM_NAME,
        };
        let program: &mut Xdp = ebpf
            .program_mut(FLOOR_PROGRAM_NAME)
            .ok_or(missing)?
            .try_into()
            .map_err(|_: ProgramError| KernelError::ProgramMissing {
                name: FLOOR_PROGRAM_NAME,
            })?;
        program.load().map_err(|source| KernelError::ProgramLoad {
            name: FLOOR_PROGRAM_NAME,
            source,
        })?;
        let info = program.info().map_err(|source| KernelError::ProgramLoad {
            name: FLOOR_PROGRAM_NAME,
            source,
        })?;
        Ok(info.id())
    }

    pub(super) fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// Returns the state of the tables in which the XDP program searches exact bans: their size,
    /// their hash seed, and per family how many bans found no slot and are searched in the hash
    /// map instead.
    pub fn ban_table_state(&self) -> firewall_common::BanTableState {
        self.maps.ban_table_state()
    }

    /// Detaches the attachments from index `keep` on, newest first.
    fn detach_from(&mut self, keep: usize) -> Result<(), KernelError> {
        let mut ebpf = lock(&self.ebpf);
        let program = xdp_program(&mut ebpf)?;

        let mut first_error = None;
        while self.attachments.len() > keep {
            let Some(attachment) = self.attachments.pop() else {
                break;
            };
            let result = match attachment.link {
                AttachmentLink::Owned(link) => program.detach(link),
                AttachmentLink::Pinned(pinned) => match pinned.unpin() {
                    Ok(link) => {
                        drop(link);
                        Ok(())
                    }
                    Err(error) => Err(ProgramError::IOError(error)),
                },
            };
            match result {
                Ok(()) => {
                    tracing::info!(interface = attachment.interface, "detached the XDP program");
                }
                Err(source) => {
                    tracing::warn!(
                        interface = attachment.interface,
                        error = %error_chain(&source),
                        "failed to detach the XDP program"
                    );
                    first_error.get_or_insert(KernelError::Detach {
                        interface: attachment.interface,
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for KernelFirewall {
    fn drop(&mut self) {
        // `detach_from` logs each failure. Dropping the program afterwards still closes any link
        // that failed to detach, and the kernel detaches a link when its last descriptor closes.
        let _ = self.detach_all();
    }
}

impl AttachedMode {
    /// Label used in logs and errors.
    pub const fn label(self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Generic => "generic",
        }
    }
}

/// Every map the agent pins, so that bans and counters outlive the agent.
const PINNED_MAPS: [&str; 12] = [
    MAP_BANS_V4,
    MAP_BAN_TABLE_V4,
    MAP_BAN_TABLE_V6,
    MAP_BAN_TABLE_STATE,
    MAP_BANS_V6,
    MAP_BAN_RANGES_V4,
    MAP_BAN_RANGES_V6,
    MAP_ALLOW_V4,
    MAP_ALLOW_V6,
    MAP_ALLOW_SUMMARY,
    MAP_SOURCE_STATS,
    MAP_VERDICTS,
];

/// Puts `program` into the XDP link pinned at `path` in place of the program it runs, and
/// returns the link pinned again at the same path.
///
/// When the update fails, the old link is detached: the caller then attaches a new one.
fn update_pinned_link(
    program: &mut Xdp,
    interface: &str,
    path: std::path::PathBuf,
) -> Result<PinnedLink, KernelError> {
    let pinned = PinnedLink::from_pin(&path).map_err(|source| KernelError::OpenPinnedLink {
        path: path.clone(),
        source,
    })?;
    // The descriptor keeps the link alive while its pin is briefly gone.
    let link = pinned.unpin().map_err(|source| KernelError::PinIo {
        path: path.clone(),
        action: "remove the pinned link",
        source,
    })?;
    let link = XdpLink::try_from(link).map_err(|source| KernelError::LinkNotPinnable {
        interface: interface.to_owned(),
        source,
    })?;
    let link_id = program
        .attach_to_link(link)
        .map_err(|source| KernelError::Attach {
            interface: interface.to_owned(),
            mode: "in-place",
            source,
        })?;
    pin_link(program, link_id, interface, path)
}

/// Takes the link `link_id` out of the program's keeping and pins it at `path`.
fn pin_link(
    program: &mut Xdp,
    link_id: XdpLinkId,
    interface: &str,
    path: std::path::PathBuf,
) -> Result<PinnedLink, KernelError> {
    let link = program
        .take_link(link_id)
        .map_err(|source| KernelError::Attach {
            interface: interface.to_owned(),
            mode: "pinned",
            source,
        })?;
    let link = FdLink::try_from(link).map_err(|source| KernelError::LinkNotPinnable {
        interface: interface.to_owned(),
        source,
    })?;
    link.pin(&path).map_err(|source| KernelError::PinLink {
        interface: interface.to_owned(),
        path,
        source,
    })
}

fn validate_capacity(setting: &'static str, max_entries: u32) -> Result<(), KernelError> {
    if max_entries == 0 {
        return Err(KernelError::InvalidMapCapacity { setting });
    }
    Ok(())
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, KernelError> {
    let missing = KernelError::ProgramMissing { name: PROGRAM_NAME };
    let Some(program) = ebpf.program_mut(PROGRAM_NAME) else {
        return Err(missing);
    };
    program.try_into().map_err(|_: ProgramError| missing)
}

fn attach_in(
    program: &mut Xdp,
    interface: &str,
    mode: AttachedMode,
) -> Result<XdpLinkId, KernelError> {
    // aya turns the name into a C string and panics on an interior NUL, which no interface name
    // contains.
    if interface.is_empty() || interface.contains('\0') {
        return Err(KernelError::InterfaceNotFound {
            interface: interface.escape_debug().to_string(),
        });
    }

    let aya_mode = match mode {
        AttachedMode::Driver => AyaXdpMode::Driver,
        AttachedMode::Generic => AyaXdpMode::Skb,
    };
    program
        .attach(interface, aya_mode)
        .map_err(|source| match source {
            ProgramError::UnknownInterface { .. } => KernelError::InterfaceNotFound {
                interface: interface.to_owned(),
            },
            source => KernelError::Attach {
                interface: interface.to_owned(),
                mode: mode.label(),
                source,
            },
        })
}

/// Locks the object. A poisoned lock is taken over, because aya's handles stay consistent
/// whatever a panicking thread was doing with them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Formats an error with its sources, for log fields.
fn error_chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Default settings without pins, so that no test writes to the default pin directory.
    fn unpinned() -> KernelSettings {
        KernelSettings {
            pin: false,
            ..KernelSettings::default()
        }
    }

    #[test]
    fn empty_object_reports_missing_build() {
        let error = KernelFirewall::load_object(&[], &unpinned())
            .err()
            .expect("an empty object must not load");
        assert!(matches!(error, KernelError::ObjectMissing));
        assert!(error.to_string().contains("cargo xtask build"));
    }

    #[test]
    fn zero_capacity_is_rejected_before_loading() {
        let settings = KernelSettings {
            bans_max_entries: 0,
            ..unpinned()
        };
        let error = KernelFirewall::load_object(b"not an ELF object", &settings)
            .err()
            .expect("a zero capacity must not load");
        assert!(matches!(
            error,
            KernelError::InvalidMapCapacity {
                setting: "bans_max_entries"
            }
        ));
    }

    #[test]
    fn garbage_object_fails_to_parse() {
        let error = KernelFirewall::load_object(b"not an ELF object", &unpinned())
            .err()
            .expect("garbage must not load");
        assert!(matches!(error, KernelError::Load { .. }));
    }

    #[test]
    fn error_chain_joins_sources() {
        let error = KernelError::Clock {
            source: nix::Error::EPERM,
        };
        assert_eq!(
            error_chain(&error),
            "failed to read the CLOCK_BOOTTIME clock: EPERM: Operation not permitted"
        );
    }
}
