//! `firewall-agent`: the daemon. Loads the XDP program, restores bans, and runs the proxy, the
//! admin API and the metrics listener until SIGINT or SIGTERM.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use firewall_agent::config::{Config, LogFormat, Overrides, UpstreamUrl};
use firewall_agent::daemon::Agent;
use firewall_agent::kernel::{
    self, Blocklist, KernelError, KernelFirewall, KernelSettings, SourceTotal, VerdictTotal,
};
use firewall_agent::network::IpNetwork;
use firewall_agent::reload::Reloader;
use firewall_agent::store::Store;
use firewall_agent::telemetry;

#[global_allocator]
static ALLOCATOR: firewall_agent::MiMalloc = firewall_agent::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "firewall-agent",
    version,
    about = "Kernel-assisted API firewall agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the firewall in the foreground until SIGINT or SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML config file. Without it, defaults and the flags below are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Base URL of the protected API (replaces proxy.upstream), such as http://127.0.0.1:9000.
    #[arg(long, value_name = "URL")]
    upstream: Option<UpstreamUrl>,

    /// Address the proxy listens on (replaces proxy.listen), such as 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Interface to attach the XDP program to; repeat for several (replaces xdp.interfaces).
    #[arg(long = "interface", value_name = "IF")]
    interfaces: Vec<String>,

    /// Log format: text or json (replaces log.format).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// Path of the admin API socket (replaces admin.socket_path).
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,

    /// Loopback address of the metrics listener (replaces metrics.listen).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Path of the ban store file (replaces store.path).
    #[arg(long = "store", value_name = "FILE")]
    store_path: Option<PathBuf>,
}

impl RunArgs {
    fn overrides(self) -> (Option<PathBuf>, Overrides) {
        let overrides = Overrides {
            upstream: self.upstream,
            listen: self.listen,
            interfaces: self.interfaces,
            log_format: self.log_format,
            admin_socket: self.admin_socket,
            metrics_listen: self.metrics_listen,
            store_path: self.store_path,
        };
        (self.config, overrides)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let (config_path, overrides) = args.overrides();
    let reload_overrides = overrides.clone();
    let config = match Config::load(config_path.as_deref(), overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("firewall-agent: {}", telemetry::ErrorChain(&error));
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = telemetry::init_logging(config.log.format) {
        eprintln!("firewall-agent: {error}");
        return ExitCode::FAILURE;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(serve(config, config_path, reload_overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "agent stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Starts every part in order, waits for a signal, then stops them in reverse order. SIGHUP
/// re-reads the config file and reloads what can change while running.
async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<()> {
    let upstream = config
        .proxy
        .upstream
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        upstream,
        interfaces = ?config.xdp.interfaces,
        "agent starting"
    );

    kernel::check_privileges().context("the agent cannot load the XDP program")?;
    kernel::check_interfaces(&config.xdp)?;
    let store = Store::open(&config.store.path)?;
    let firewall = KernelFirewall::load(&config.xdp).context("failed to load the XDP program")?;
    let kernel = Arc::new(SharedKernel::new(firewall));

    let agent = Agent::new(
        config.clone(),
        store,
        Arc::clone(&kernel) as Arc<dyn Blocklist>,
    );
    agent
        .restore_bans()
        .context("failed to restore stored bans into the kernel")?;

    // A failed attach_all detaches from the interfaces it reached before failing.
    kernel
        .attach_all(&config.xdp)
        .context("failed to attach the XDP program")?;
    tracing::info!(interfaces = ?config.xdp.interfaces, "XDP program attached");

    let bound = match agent.bind().await {
        Ok(bound) => bound,
        Err(error) => {
            detach(&kernel);
            return Err(error).context("failed to start the listeners");
        }
    };
    let running = bound.start();
    tracing::info!("agent started");

    let signal_result = wait_for_signal(|| {
        reload(running.reloader(), config_path.as_deref(), &overrides);
    })
    .await;

    running.stop().await;
    detach(&kernel);
    signal_result
}

/// Detaches the XDP program from every interface, logging a failure: the program is also
/// detached when the process exits and the kernel drops its links.
fn detach(kernel: &SharedKernel) {
    match kernel.detach_all() {
        // `detach_all` logs each interface it detaches or leaves attached.
        Ok(()) => {}
        Err(error) => tracing::error!(
            error = %telemetry::ErrorChain(&error),
            "failed to detach the XDP program from every interface"
        ),
    }
}

/// Calls `on_hangup` on each SIGHUP and completes on the first SIGINT or SIGTERM.
async fn wait_for_signal(mut on_hangup: impl FnMut()) -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    let mut hangup =
        signal(SignalKind::hangup()).context("failed to install the SIGHUP handler")?;
    let name = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = hangup.recv() => on_hangup(),
        }
    };
    tracing::info!(signal = name, "stopping");
    Ok(())
}

/// Re-reads and validates the config file, then reloads the parts that support it. A config
/// that fails to load is logged and changes nothing.
fn reload(reloader: &Reloader, config_path: Option<&std::path::Path>, overrides: &Overrides) {
    let Some(path) = config_path else {
        tracing::warn!("SIGHUP received, but the agent runs without --config: nothing to reload");
        return;
    };
    tracing::info!(path = %path.display(), "SIGHUP received, reloading the config");
    match Config::load(Some(path), overrides.clone()) {
        Ok(config) => {
            // Failures are logged per section by the reloader.
            let _ = reloader.reload(&config);
        }
        Err(error) => tracing::error!(
            error = %telemetry::ErrorChain(&error),
            "failed to reload the config, keeping the running one"
        ),
    }
}

/// The loaded XDP program behind a mutex, so that the ban manager, the admin API and the
/// metrics share it while `main` still attaches and detaches it.
struct SharedKernel {
    firewall: Mutex<KernelFirewall>,
}

impl SharedKernel {
    fn new(firewall: KernelFirewall) -> Self {
        Self {
            firewall: Mutex::new(firewall),
        }
    }

    fn lock(&self) -> MutexGuard<'_, KernelFirewall> {
        // A panic while holding the lock leaves the maps as the kernel has them, which is
        // still the state to work with.
        self.firewall.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attach_all(&self, settings: &KernelSettings) -> Result<(), KernelError> {
        self.lock().attach_all(settings)
    }

    fn detach_all(&self) -> Result<(), KernelError> {
        self.lock().detach_all()
    }
}

impl Blocklist for SharedKernel {
    fn ban(&self, network: IpNetwork, expires_at: Option<SystemTime>) -> Result<(), KernelError> {
        self.lock().ban(network, expires_at)
    }

    fn ban_all(&self, bans: &[firewall_agent::kernel::KernelBan]) -> Result<(), KernelError> {
        self.lock().ban_all(bans)
    }

    fn unban(&self, network: IpNetwork) -> Result<bool, KernelError> {
        self.lock().unban(network)
    }

    fn allow(&self, network: IpNetwork) -> Result<(), KernelError> {
        self.lock().allow(network)
    }

    fn disallow(&self, network: IpNetwork) -> Result<bool, KernelError> {
        self.lock().disallow(network)
    }

    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError> {
        self.lock().verdict_totals()
    }

    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError> {
        self.lock().top_sources(limit)
    }

    fn ban_table_state(&self) -> Option<firewall_common::BanTableState> {
        Blocklist::ban_table_state(&*self.lock())
    }

    fn kernel_bans(&self) -> Result<Vec<firewall_agent::kernel::KernelBan>, KernelError> {
        self.lock().kernel_bans()
    }
}
