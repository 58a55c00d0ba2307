//! `fwctl`: the control CLI. Lists, adds and removes bans and allowlist entries, shows the XDP
//! counters, and manages the OAuth users and signing keys, through the agent's admin socket. It
//! also lists the threat detection rules.
//! While the agent is stopped, `bans add` and `bans remove` write the pinned kernel maps
//! directly.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use firewall_agent::admin::api::{
    AddAllowRequest, AddBanRequest, AllowView, BanView, ImportBansRequest, MAX_TOP_SOURCES, Stats,
};
use firewall_agent::admin::oauth_api::{AddUserRequest, KeyView};
use firewall_agent::admin::{AdminClient, ClientError};
use firewall_agent::bans::validate_address;
use firewall_agent::config::{DEFAULT_ADMIN_SOCKET, MAX_DURATION_SECONDS};
use firewall_agent::detect::{self, MAX_PARANOIA_LEVEL};
use firewall_agent::kernel::{Blocklist, DEFAULT_PIN_DIR, PinnedBlocklist, link_holders, remove_pins};
use firewall_agent::network::IpNetwork;
use firewall_agent::telemetry::ErrorChain;

/// Default time-to-live of `fwctl bans add`.
const DEFAULT_TTL: &str = "1h";

#[derive(Debug, Parser)]
#[command(name = "fwctl", version, about = "Control the API firewall agent")]
struct Cli {
    /// Path of the agent's admin socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_ADMIN_SOCKET)]
    socket: PathBuf,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, add or remove bans.
    #[command(subcommand)]
    Bans(BanCommand),
    /// List, add or remove allowlist entries, whose packets pass whatever bans cover them.
    #[command(subcommand)]
    Allow(AllowCommand),
    /// Detach the XDP program and remove its pinned maps and links. Stop the agent first: a
    /// running agent keeps the program attached until it exits. Stored bans come back at the
    /// agent's next start.
    Detach(DetachArgs),
    /// Show the XDP verdict counters and the sources with the most packets.
    Stats(StatsArgs),
    /// List, add or remove the users who sign in on the OAuth login page.
    #[command(subcommand)]
    Users(UserCommand),
    /// List or rotate the OAuth signing keys.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// List the threat detection rules, whose ids `[threat]` exclusions and detection-only lists
    /// name. It reads the catalogue built into fwctl, so the agent need not run.
    Rules(RulesArgs),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List the users.
    List,
    /// Add a user, or set the password of an existing one. The password is read from the
    /// terminal without echo, or as the first line of standard input when that is not a
    /// terminal. It is never taken from the command line.
    Add {
        /// Login name.
        #[arg(value_name = "USERNAME")]
        username: String,
    },
    /// Remove a user.
    Remove {
        /// Login name.
        #[arg(value_name = "USERNAME")]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// List the published signing keys and their status.
    List,
    /// Make the published next key the signing key and publish a new next key. The previous
    /// key stays published until the access tokens it signed have expired.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum BanCommand {
    /// List the bans in force, with their origin and remaining time.
    List,
    /// Ban an address or a CIDR range.
    Add(AddArgs),
    /// Lift the ban of an address or a range.
    Remove {
        /// IPv4 or IPv6 address, or CIDR range.
        #[arg(value_name = "ADDR", value_parser = parse_address)]
        address: IpNetwork,

        /// The agent's pin directory, written directly when the agent is not running.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Ban every address or range in FILE, one per line. Blank lines and lines starting with
    /// `#` are skipped; invalid lines are reported with their numbers and the others applied.
    Import(ImportArgs),
}

#[derive(Debug, Subcommand)]
enum AllowCommand {
    /// List the allowlist, including the entries of the config file.
    List,
    /// Allowlist an address or a CIDR range.
    Add {
        /// IPv4 or IPv6 address, or CIDR range.
        #[arg(value_name = "ADDR", value_parser = parse_address)]
        address: IpNetwork,
    },
    /// Remove an allowlist entry added with `fwctl allow add`.
    Remove {
        /// IPv4 or IPv6 address, or CIDR range.
        #[arg(value_name = "ADDR", value_parser = parse_address)]
        address: IpNetwork,
    },
}

#[derive(Debug, Args)]
struct AddArgs {
    /// IPv4 or IPv6 address, or CIDR range such as 198.51.100.0/24.
    #[arg(value_name = "ADDR", value_parser = parse_address)]
    address: IpNetwork,

    /// How long the ban lasts, such as 90s, 10m, 1h or 2d; `never` for a ban without expiry.
    #[arg(long, value_name = "TTL", default_value = DEFAULT_TTL, value_parser = parse_ttl)]
    ttl: Ttl,

    /// Reason shown by `fwctl bans list`. Not kept when the agent is not running.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,

    /// The agent's pin directory, written directly when the agent is not running.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// File with one address or CIDR range per line.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// How long each ban lasts, such as 90s, 10m, 1h or 2d; `never` for bans without expiry.
    #[arg(long, value_name = "TTL", default_value = DEFAULT_TTL, value_parser = parse_ttl)]
    ttl: Ttl,

    /// Reason shown by `fwctl bans list`.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

#[derive(Debug, Args)]
struct DetachArgs {
    /// The agent's pin directory (`pin_dir` in the [xdp] config section).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(Debug, Args)]
struct RulesArgs {
    /// Only the rules that run at this `[threat] paranoia_level`.
    #[arg(long, value_name = "LEVEL",
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_PARANOIA_LEVEL)))]
    level: Option<u8>,
}

/// One detection rule, as `fwctl rules` prints it.
#[derive(Debug, Serialize)]
struct RuleView {
    id: &'static str,
    number: u32,
    family: &'static str,
    severity: &'static str,
    /// Weight in the anomaly score.
    weight: u32,
    /// Lowest paranoia level at which the rule runs.
    level: u8,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Number of sources to show.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=MAX_TOP_SOURCES as i64))]
    top: u16,
}

/// A parsed `--ttl`: whole seconds, or `None` for never.
#[derive(Clone, Copy, Debug)]
struct Ttl(Option<u64>);

fn parse_address(text: &str) -> Result<IpNetwork, String> {
    text.parse::<IpNetwork>().map_err(|error| error.to_string())
}

/// An invalid line of an import file.
#[derive(Debug, PartialEq, Eq)]
struct BadLine {
    /// Line number, counted from 1.
    number: usize,
    message: String,
}

/// A valid line of an import file.
#[derive(Debug, PartialEq, Eq)]
struct ImportLine {
    /// Line number, counted from 1.
    number: usize,
    network: IpNetwork,
}

/// Parses an import file: one address or CIDR range per line. Blank lines and `#` comments are
/// skipped.
fn parse_import(text: &str) -> (Vec<ImportLine>, Vec<BadLine>) {
    let mut lines = Vec::new();
    let mut bad_lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_address(line) {
            Ok(network) => lines.push(ImportLine {
                number: index + 1,
                network,
            }),
            Err(message) => bad_lines.push(BadLine {
                number: index + 1,
                message,
            }),
        }
    }
    (lines, bad_lines)
}

/// Applies the bans of an import file in one admin request, which the agent stores in one
/// transaction and writes to the kernel with batched map updates. Reports invalid lines and
/// rejected bans on stderr with their line numbers. Returns whether every line was applied.
async fn import_bans(
    client: &AdminClient,
    path: &Path,
    ttl: Ttl,
    reason: Option<String>,
) -> Result<bool, ClientError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: failed to read {}: {error}", path.display());
            return Ok(false);
        }
    };
    let (lines, bad_lines) = parse_import(&text);
    for bad in &bad_lines {
        eprintln!("{}:{}: {}", path.display(), bad.number, bad.message);
    }

    let request = ImportBansRequest {
        addresses: lines.iter().map(|line| line.network.to_string()).collect(),
        ttl_seconds: ttl.0,
        reason,
    };
    let response = client.import_bans(&request).await?;
    for rejected in &response.rejected {
        let number = lines.get(rejected.index).map_or(0, |line| line.number);
        eprintln!(
            "{}:{number}: {}: {}",
            path.display(),
            rejected.address,
            rejected.error
        );
    }
    println!(
        "applied {} bans; {} invalid lines, {} bans rejected",
        response.applied,
        bad_lines.len(),
        response.rejected.len()
    );
    Ok(bad_lines.is_empty() && response.rejected.is_empty())
}

fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.eq_ignore_ascii_case("never") {
        return Ok(Ttl(None));
    }
    let format_help = "expected a whole number with a unit of s, m, h or d (such as 90s, 10m, 1h \
                       or 2d, or combined as 1h30m), or `never`";
    // humantime's own messages name units that a TTL cannot use (ns, ms) and parser positions,
    // so only the format is explained.
    let duration = humantime::parse_duration(text)
        .map_err(|_| format!("invalid TTL `{text}`: {format_help}"))?;
    if duration < Duration::from_secs(1) {
        return Err(format!(
            "invalid TTL `{text}`: must be at least 1s; {format_help}"
        ));
    }

    // Round a fractional second up, so that the ban lasts at least as long as asked.
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    if seconds > MAX_DURATION_SECONDS {
        return Err(format!(
            "invalid TTL `{text}`: must be at most {}d (ten years)",
            MAX_DURATION_SECONDS / 86_400
        ));
    }
    Ok(Ttl(Some(seconds)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fwctl: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(execute(cli)) {
        Ok(Outcome::Complete) => ExitCode::SUCCESS,
        // The lines or bans that failed are already reported, one per line.
        Ok(Outcome::Partial) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("fwctl: {}", ErrorChain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Whether a command did all it was given to do.
enum Outcome {
    Complete,
    /// Some input was invalid or rejected; the rest was applied.
    Partial,
}

async fn execute(cli: Cli) -> Result<Outcome, ClientError> {
    let json = cli.json;
    if let Command::Detach(args) = &cli.command {
        return Ok(detach(&cli.socket, &args.pin_dir, json));
    }
    if let Command::Rules(args) = &cli.command {
        let rules = rule_views(args.level);
        print_output(json, &rules, |rules| print_rules(rules));
        return Ok(Outcome::Complete);
    }
    let client = AdminClient::new(cli.socket);

    match cli.command {
        Command::Bans(BanCommand::List) => {
            // JSON output is the bare array, so scripts can iterate it directly.
            let list = client.list_bans().await?;
            print_output(json, &list.bans, |bans| print_ban_list(bans));
        }
        Command::Bans(BanCommand::Add(args)) => {
            let request = AddBanRequest {
                address: args.address.to_string(),
                ttl_seconds: args.ttl.0,
                reason: args.reason,
            };
            match client.add_ban(&request).await {
                Ok(ban) => {
                    print_output(json, &ban, |ban| println!("banned {}", describe_ban(ban)));
                }
                Err(error @ ClientError::NotRunning { .. }) => {
                    return Ok(offline_ban(
                        &error,
                        &args.pin_dir,
                        args.address,
                        args.ttl,
                        json,
                    ));
                }
                Err(error) => return Err(error),
            }
        }
        Command::Bans(BanCommand::Remove { address, pin_dir }) => {
            match client.remove_ban(address).await {
                Ok(ban) => print_output(json, &ban, |ban| {
                    println!("removed the ban of {}", ban.address)
                }),
                Err(error @ ClientError::NotRunning { .. }) => {
                    return Ok(offline_unban(&error, &pin_dir, address, json));
                }
                Err(error) => return Err(error),
            }
        }
        Command::Bans(BanCommand::Import(args)) => {
            if !import_bans(&client, &args.file, args.ttl, args.reason).await? {
                return Ok(Outcome::Partial);
            }
        }
        Command::Allow(AllowCommand::List) => {
            let list = client.list_allows().await?;
            print_output(json, &list.entries, |entries| print_allow_list(entries));
        }
        Command::Allow(AllowCommand::Add { address }) => {
            let request = AddAllowRequest {
                address: address.to_string(),
            };
            let entry = client.add_allow(&request).await?;
            print_output(json, &entry, |entry| {
                println!("allowlisted {}", entry.address)
            });
        }
        Command::Allow(AllowCommand::Remove { address }) => {
            let entry = client.remove_allow(address).await?;
            print_output(json, &entry, |entry| {
                println!("removed the allowlist entry {}", entry.address)
            });
        }
        // Handled above, without the admin socket.
        Command::Detach(_) | Command::Rules(_) => {}
        Command::Stats(args) => {
            let stats = client.stats(usize::from(args.top)).await?;
            print_output(json, &stats, print_stats);
        }
        Command::Users(command) => return users(&client, command, json).await,
        Command::Keys(command) => {
            let list = match command {
                KeyCommand::List => client.list_keys().await?,
                KeyCommand::Rotate => client.rotate_keys().await?,
            };
            print_output(json, &list.keys, |keys| print_key_list(keys));
        }
    }
    Ok(Outcome::Complete)
}

/// A ban written into the pinned maps while the agent is stopped, as `--json` prints it.
#[derive(Debug, Serialize)]
struct OfflineBan {
    address: String,
    /// Remaining seconds; `None` for a ban that never expires.
    ttl_seconds: Option<u64>,
    pin_dir: PathBuf,
}

/// Bans `address` in the maps pinned in `pin_dir`, because the agent did not respond on its
/// socket. The XDP program applies the ban at once; the agent stores it at its next start.
fn offline_ban(
    socket_error: &ClientError,
    pin_dir: &Path,
    address: IpNetwork,
    ttl: Ttl,
    json: bool,
) -> Outcome {
    if let Err(error) = validate_address(address) {
        eprintln!("fwctl: {}", ErrorChain(&error));
        return Outcome::Partial;
    }
    let expires_at = ttl
        .0
        .map(|seconds| SystemTime::now() + Duration::from_secs(seconds));
    let written =
        PinnedBlocklist::open(pin_dir).and_then(|blocklist| blocklist.ban(address, expires_at));
    if let Err(error) = written {
        eprintln!("fwctl: {}", ErrorChain(socket_error));
        eprintln!(
            "fwctl: failed to write the pinned maps instead: {}",
            ErrorChain(&error)
        );
        return Outcome::Partial;
    }

    eprintln!(
        "fwctl: the agent is not running, so the ban was written into the pinned maps in {}; \
         the XDP program applies it now and the agent stores it at its next start",
        pin_dir.display()
    );
    let ban = OfflineBan {
        address: address.to_string(),
        ttl_seconds: ttl.0,
        pin_dir: pin_dir.to_owned(),
    };
    print_output(json, &ban, |ban| match ban.ttl_seconds {
        Some(seconds) => println!("banned {} for {}", ban.address, format_remaining(seconds)),
        None => println!("banned {} without expiry", ban.address),
    });
    Outcome::Complete
}

/// Lifts the ban of `address` in the maps pinned in `pin_dir`, because the agent did not respond
/// on its socket.
///
/// NOTE: a ban that is also in the agent's store comes back at the agent's next start, because
/// the store is the source of truth. Only bans written while the agent was stopped stay lifted.
fn offline_unban(
    socket_error: &ClientError,
    pin_dir: &Path,
    address: IpNetwork,
    json: bool,
) -> Outcome {
    let removed = PinnedBlocklist::open(pin_dir).and_then(|blocklist| blocklist.unban(address));
    let removed = match removed {
        Ok(removed) => removed,
        Err(error) => {
            eprintln!("fwctl: {}", ErrorChain(socket_error));
            eprintln!(
                "fwctl: failed to write the pinned maps instead: {}",
                ErrorChain(&error)
            );
            return Outcome::Partial;
        }
    };
    if !removed {
        eprintln!(
            "fwctl: {address} has no ban in the pinned maps in {}",
            pin_dir.display()
        );
        return Outcome::Partial;
    }

    eprintln!(
        "fwctl: the agent is not running, so the ban was removed from the pinned maps in {}; \
         a ban kept in the agent's store comes back at its next start",
        pin_dir.display()
    );
    print_output(json, &address.to_string(), |address| {
        println!("removed the ban of {address}")
    });
    Outcome::Complete
}

async fn users(client: &AdminClient, command: UserCommand, json: bool) -> Result<Outcome, ClientError> {
    match command {
        UserCommand::List => {
            let list = client.list_users().await?;
            print_output(json, &list.users, |users| {
                if users.is_empty() {
                    println!("no users");
                }
                for user in users {
                    println!("{}", user.username);
                }
            });
        }
        UserCommand::Add { username } => {
            let password = match read_password() {
                Ok(password) => password,
                Err(message) => {
                    eprintln!("fwctl: {message}");
                    return Ok(Outcome::Partial);
                }
            };
            let request = AddUserRequest { username, password };
            let user = client.add_user(&request).await?;
            print_output(json, &user, |user| println!("added user {}", user.username));
        }
        UserCommand::Remove { username } => {
            let user = client.remove_user(&username).await?;
            print_output(json, &user, |user| println!("removed user {}", user.username));
        }
    }
    Ok(Outcome::Complete)
}

/// Reads a password: from the terminal without echo, asked twice, or as the first line of
/// standard input when that is not a terminal.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};

    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|error| format!("failed to read the password from standard input: {error}"))?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err("no password on standard input: pipe it as the first line".into());
        }
        return Ok(password);
    }

    let prompt = |text: &str| -> Result<String, String> {
        eprint!("{text}");
        let _ = std::io::stderr().flush();
        let line = read_line_without_echo(&stdin)
            .map_err(|error| format!("failed to read the password from the terminal: {error}"))?;
        eprintln!();
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let password = prompt("password: ")?;
    let repeated = prompt("repeat the password: ")?;
    if password != repeated {
        return Err("the two passwords differ: nothing was changed".into());
    }
    if password.is_empty() {
        return Err("the password is empty: nothing was changed".into());
    }
    Ok(password)
}

/// Reads one line from the terminal with echo turned off, restoring the terminal afterwards.
fn read_line_without_echo(stdin: &std::io::Stdin) -> std::io::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::BufRead as _;

    let original = tcgetattr(stdin).map_err(std::io::Error::from)?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &silent).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(stdin, SetArg::TCSANOW, &original).map_err(std::io::Error::from)?;
    read.map(|_| line)
}

fn print_key_list(keys: &[KeyView]) {
    let mut table = Table::new(&["KID", "STATUS", "CREATED (UNIX MS)", "RETIRED UNTIL (UNIX MS)"]);
    for key in keys {
        let expires = key.expires_at_ms.map_or_else(|| "-".to_owned(), |at| at.to_string());
        table.row(vec![key.kid.clone(), key.status.to_string(), key.created_at_ms.to_string(), expires]);
    }
    table.print();
}

/// Removes the pins in `pin_dir`, reporting the detached interfaces or the error.
///
/// Refuses while an agent accepts connections on `socket`, because a running agent keeps its
/// links open: the program would stay attached until the agent exits.
fn detach(socket: &Path, pin_dir: &Path, json: bool) -> Outcome {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        eprintln!(
            "fwctl: an agent is running on {}; stop it first (SIGTERM), then run `fwctl detach` \
             again",
            socket.display()
        );
        return Outcome::Partial;
    }
    // An agent whose admin socket is elsewhere still has its links open.
    match link_holders(pin_dir) {
        Ok(holders) if !holders.is_empty() => {
            for holder in &holders {
                eprintln!(
                    "fwctl: process {} has the XDP link of {} pinned in {} open; stop it first \
                     (SIGTERM), then run `fwctl detach` again",
                    holder.pid,
                    holder.interface,
                    pin_dir.display()
                );
            }
            return Outcome::Partial;
        }
        Ok(_) => {}
        Err(error) => {
            eprintln!("fwctl: {}", ErrorChain(&error));
            return Outcome::Partial;
        }
    }
    let existed = pin_dir.exists();
    match remove_pins(pin_dir) {
        Ok(interfaces) => {
            print_output(json, &interfaces, |interfaces| {
                if !interfaces.is_empty() {
                    println!("detached from {}", interfaces.join(", "));
                }
                if existed {
                    println!("removed the pins in {}", pin_dir.display());
                } else {
                    println!("nothing pinned in {}", pin_dir.display());
                }
            });
            Outcome::Complete
        }
        Err(error) => {
            eprintln!("fwctl: {}", ErrorChain(&error));
            Outcome::Partial
        }
    }
}

fn print_output<T: Serialize>(json: bool, value: &T, print_table: impl FnOnce(&T)) {
    if !json {
        print_table(value);
        return;
    }
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // Serializing these plain data types does not fail in practice. Should it, the table is
        // better than no output.
        Err(_) => print_table(value),
    }
}

fn describe_ban(ban: &BanView) -> String {
    match ban.remaining_seconds {
        Some(seconds) => format!(
            "{} for {} ({})",
            ban.address,
            format_remaining(seconds),
            ban.origin
        ),
        None => format!("{} with no expiry ({})", ban.address, ban.origin),
    }
}

fn format_remaining(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn print_ban_list(bans: &[BanView]) {
    if bans.is_empty() {
        println!("no bans in force");
        return;
    }
    let mut table = Table::new(&["ADDRESS", "ORIGIN", "EXPIRES IN", "REASON"]);
    for ban in bans {
        let remaining = ban
            .remaining_seconds
            .map_or_else(|| "never".to_owned(), format_remaining);
        table.row(vec![
            ban.address.to_string(),
            ban.origin.to_string(),
            remaining,
            ban.reason.clone(),
        ]);
    }
    table.print();
}

fn print_allow_list(entries: &[AllowView]) {
    if entries.is_empty() {
        println!("the allowlist is empty");
        return;
    }
    let mut table = Table::new(&["ADDRESS", "SOURCE"]);
    for entry in entries {
        let source = if entry.configured { "config" } else { "fwctl" };
        table.row(vec![entry.address.to_string(), source.to_owned()]);
    }
    table.print();
}

/// Returns the catalogue in number order, only the rules that run at `level` when it is set.
fn rule_views(level: Option<u8>) -> Vec<RuleView> {
    let mut rules: Vec<RuleView> = detect::rules::ALL
        .iter()
        .filter(|rule| level.is_none_or(|level| rule.level <= level))
        .map(|rule| RuleView {
            id: rule.id,
            number: rule.number,
            family: rule.family.label(),
            severity: rule.severity.label(),
            weight: rule.severity.weight(),
            level: rule.level,
        })
        .collect();
    rules.sort_by_key(|rule| rule.number);
    rules
}

fn print_rules(rules: &[RuleView]) {
    let mut table = Table::new(&["ID", "NUMBER", "FAMILY", "SEVERITY", "WEIGHT", "LEVEL"]);
    for rule in rules {
        table.row(vec![
            rule.id.to_owned(),
            rule.number.to_string(),
            rule.family.to_owned(),
            rule.severity.to_owned(),
            rule.weight.to_string(),
            rule.level.to_string(),
        ]);
    }
    table.print();
}

fn print_stats(stats: &Stats) {
    let mut verdicts = Table::new(&["VERDICT", "PACKETS", "BYTES"]);
    for verdict in &stats.verdicts {
        verdicts.row(vec![
            verdict.verdict.clone(),
            verdict.packets.to_string(),
            verdict.bytes.to_string(),
        ]);
    }
    verdicts.print();
    println!();

    if stats.top_sources.is_empty() {
        println!("no sources counted yet");
    } else {
        let mut sources = Table::new(&[
            "SOURCE",
            "PASSED PACKETS",
            "DROPPED PACKETS",
            "PASSED BYTES",
            "DROPPED BYTES",
        ]);
        for source in &stats.top_sources {
            sources.row(vec![
                source.address.to_string(),
                source.passed_packets.to_string(),
                source.dropped_packets.to_string(),
                source.passed_bytes.to_string(),
                source.dropped_bytes.to_string(),
            ]);
        }
        sources.print();
    }
    println!();
    println!("active bans: {}", stats.active_bans);
}

/// A text table with left-aligned columns padded to the widest cell.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();

        for row in &self.rows {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
                }
            }
            println!("{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_durations_and_never() {
        assert_eq!(parse_ttl("10m").ok().map(|ttl| ttl.0), Some(Some(600)));
        assert_eq!(parse_ttl("1h 30m").ok().map(|ttl| ttl.0), Some(Some(5400)));
        assert_eq!(parse_ttl("1500ms").ok().map(|ttl| ttl.0), Some(Some(2)));
        assert_eq!(parse_ttl("never").ok().map(|ttl| ttl.0), Some(None));
        assert_eq!(parse_ttl("NEVER").ok().map(|ttl| ttl.0), Some(None));
    }

    #[test]
    fn ttl_error_explains_format() {
        let error = parse_ttl("10x").err().unwrap_or_default();

        assert!(error.contains("s, m, h or d"), "{error}");
        assert!(!error.contains("ns"), "{error}");
    }

    #[test]
    fn ttl_rejects_invalid_values() {
        for text in ["", "ten minutes", "0s", "500ms", "11years"] {
            let error = parse_ttl(text).err().unwrap_or_default();
            assert!(error.contains(&format!("`{text}`")), "{text}: {error}");
        }
    }

    #[test]
    fn address_is_canonical() {
        assert_eq!(
            parse_address("::ffff:192.0.2.7").ok(),
            Some("192.0.2.7".parse().expect("valid address"))
        );
        assert_eq!(
            parse_address("198.51.100.7/24").ok().map(|n| n.to_string()),
            Some("198.51.100.0/24".to_owned())
        );
        assert!(parse_address("192.0.2.256").is_err());
    }

    #[test]
    fn import_reports_bad_line_numbers() {
        let text = "# blocklist\n198.51.100.7\n\nnot-an-address\n203.0.113.0/24\n2001:db8::/200\n";
        let (lines, bad_lines) = parse_import(text);
        let networks: Vec<String> = lines.iter().map(|line| line.network.to_string()).collect();
        assert_eq!(networks, ["198.51.100.7", "203.0.113.0/24"]);
        let good_numbers: Vec<usize> = lines.iter().map(|line| line.number).collect();
        assert_eq!(good_numbers, [2, 5]);
        let numbers: Vec<usize> = bad_lines.iter().map(|bad| bad.number).collect();
        assert_eq!(numbers, [4, 6]);
        assert!(bad_lines[0].message.contains("`not-an-address`"));
    }
}
