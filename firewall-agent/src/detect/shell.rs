//! OS command injection, found by reading the value as a shell command line.
//!
//! The value is first stripped of what a shell removes before it runs a word: quotes,
//! backslashes, carets, empty substitutions (`$()`, ``` `` ```, `<()`), special parameters
//! (`$@`, `$$`) and variables glued to a word (`cu$u`). `${IFS}` becomes a space and brace
//! expansion (`c{a,oun}t`) is expanded. The result is split into simple commands at the
//! separators of shell syntax (`;`, `|`, `&`, line breaks, backticks, `$(`, parentheses). Each
//! simple command's first word, after assignments, redirections and wrappers such as `time` or
//! `nohup`, is looked up in two lists of command names: names that prose never uses, and names
//! that are also ordinary words (`cat`, `more`, `find`). A word-like name counts only with an
//! argument shaped like a shell argument, so "apples; more later" is not a finding.
//!
//! Windows batch syntax (`for /f ... do`, `if ... == ...`), mail protocol commands after a
//! line break, `alias` definitions, tilde and history expansion and variables used as command
//! names have checks of their own.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::byte_set::ByteSet;
use super::{FieldKind, Rule, rules};

/// Command names that prose does not use, found anywhere a command can start.
const DISTINCTIVE_COMMAND_NAMES: &[&str] = &[
    "whoami", "uname", "ifconfig", "ipconfig", "wget", "curl", "ncat", "netcat", "bash", "zsh",
    "ksh", "csh", "tcsh", "sh", "nc", "python", "python2", "python3", "perl", "php",
    "nodejs", "irb", "base64", "base32", "xxd", "chmod", "chown", "chgrp", "nslookup", "netstat",
    "crontab", "mkfifo", "socat", "telnet", "useradd", "usermod", "adduser", "passwd", "visudo",
    "sudo", "nohup", "busybox", "getent", "lsof", "pkill", "killall", "xterm", "nmap", "tcpdump",
    "openssl", "gcc", "c89", "c99", "awk", "gawk", "nawk", "readelf", "objdump", "systemctl",
    "traceroute", "rsync", "scp", "sftp", "ssh", "ssh-copy-id", "tftp", "ftp", "gdb", "strace",
    "ltrace", "printenv", "xargs", "hexdump", "egrep", "fgrep", "grep", "rmdir", "mkdir",
    "gunzip", "gzip", "unzip", "bzip2", "bsdtar", "7z", "ls", "ll", "vim", "chroot",
    "umount", "apt-get", "aptitude", "yum", "dnf", "pip3", "pipx", "npm", "javac", "jshell",
    "powershell", "pwsh", "certutil", "bitsadmin", "wmic", "mshta", "rundll32", "regsvr32",
    "cscript", "wscript", "systeminfo", "tasklist", "taskkill", "findstr", "regedit", "bcdboot",
    "iwr", "iwmi", "iex", "md5sum", "sha1sum", "sha256sum", "htop", "chattr", "lsattr",
    "setfacl", "getfacl", "iptables", "nft", "lastlog", "lastlogin", "cpulimit", "cscli",
    "ansible", "ansible-config", "ansible-console", "ansible-doc", "ansible-galaxy",
    "ansible-inventory", "ansible-playbook", "ansible-pull", "ansible-vault", "chef-client",
    "chef-run", "chef-shell", "chef-solo", "chef-vault", "aa-disable", "aa-enforce",
    "aa-complain", "rmt", "rmt-tar", "rmt-dump", "dmesg", "ifup", "ifdown", "modprobe",
    "insmod", "rmmod", "sysctl", "journalctl", "mysqldump", "pg_dump", "sqlite3", "docker",
    "kubectl",
];

/// Command names that are also ordinary words. They count only with a shell-like argument.
const WORD_COMMAND_NAMES: &[&str] = &[
    "cat", "head", "tail", "less", "more", "echo", "printf", "sleep", "ping", "kill", "type",
    "dir", "copy", "del", "find", "set", "touch", "file", "which", "whereis", "locate",
    "history", "diff", "wc", "last", "w", "who", "users", "groups", "uptime", "df", "du", "free",
    "top", "ip", "route", "host", "date", "test", "net", "reg", "ps", "id", "pwd", "vi", "ed",
    "ex", "cc", "rm", "mv", "cp", "ln", "tr", "cut", "paste", "nl", "rev", "tac", "od", "dd",
    "tee", "sort", "uniq", "source", "eval", "export", "env", "wall", "finger", "dig", "fish",
    "tar", "zip", "gem", "pip", "apt", "mount", "lua", "java", "ruby", "node", "sed", "strings",
    "shutdown", "reboot", "arp", "column", "fold", "comm", "bridge", "perf", "flock", "trap",
    "man", "fmt", "split", "look", "watch", "nice", "chef", "more", "exec", "emacs", "start",
    "call", "at", "chdir", "cd", "dash", "nano",
];

/// Commands that run the command after them, which then counts as the start of a command.
const WRAPPER_COMMAND_NAMES: &[&str] = &[
    "time", "nohup", "sudo", "env", "strace", "ltrace", "exec", "xargs", "timeout", "nice",
    "watch", "busybox", "command", "builtin", "flock", "cpulimit", "doas", "stdbuf", "chroot",
];

/// The lists a command name is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CommandLists {
    distinctive: bool,
    word: bool,
    wrapper: bool,
}

impl CommandLists {
    /// Returns whether the name is in [`DISTINCTIVE_COMMAND_NAMES`] or [`WORD_COMMAND_NAMES`].
    fn is_known(self) -> bool {
        self.distinctive || self.word
    }
}

/// The three command name lists in one hash map, because every simple command looks its
/// name up in them and one lookup replaces three. The names are constants, so a hash with a
/// fixed seed cannot be flooded.
static COMMAND_LISTS: LazyLock<HashMap<&'static str, CommandLists, foldhash::fast::FixedState>> =
    LazyLock::new(|| {
        let mut lists: HashMap<&'static str, CommandLists, foldhash::fast::FixedState> = HashMap::default();
        for name in DISTINCTIVE_COMMAND_NAMES {
            lists.entry(name).or_default().distinctive = true;
        }
        for name in WORD_COMMAND_NAMES {
            lists.entry(name).or_default().word = true;
        }
        for name in WRAPPER_COMMAND_NAMES {
            lists.entry(name).or_default().wrapper = true;
        }
        lists
    });

/// Length in bytes of the longest name in the command lists. A unit test checks it.
const MAX_COMMAND_NAME_BYTES: usize = 20;

/// Returns the lists that `name` is in.
fn command_lists(name: &str) -> CommandLists {
    if name.is_empty() || name.len() > MAX_COMMAND_NAME_BYTES {
        return CommandLists::default();
    }
    COMMAND_LISTS.get(name).copied().unwrap_or_default()
}

/// Globbed command paths such as `/???/c?t` or `/bin/n[c]`.
static GLOBBED_COMMAND: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:^|[;|&`\s(=])/(?:[a-z?*\[\]]{1,8}/)+[a-z]{0,3}[?*\[][a-z?*\[\]]{0,6}(?:\s|$|[;|&`)])").ok()
});

/// A shell started with a command string, or started through `$SHELL`.
static SHELL_WITH_COMMAND: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:\b(?:ba|z|k|c|tc|da)?sh|\$\{?shell\}?)(?:\s+|,)-[a-z]*c\b").ok()
});

/// The path of a program in a `bin` folder, such as `/bin/ab` or `usr/local/bin/ansible`.
static COMMAND_PATH: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s;|&=`])/?(?:usr/(?:local/)?)?s?bin/[a-z][\w.-]*(?:$|[\s;|&`])").ok()
});

/// Windows batch control flow: `for %x in (...) do` and `if a == b command`.
static BATCH_SYNTAX: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:^|[;&|\n\r(])\s*(?:",
        r"for\s+(?:/[dlrf]\s+(?:[^%\s]+\s+)?)*%%?\S+\s+in\s*\(.*\)\s*do\b",
        r"|if(?:\s+/i)?(?:\s+not)?\s+(?:exist|errorlevel|defined|cmdextversion)\s+\S",
        r"|if(?:\s*/i)?(?:\s+not)?\s+\S.*?(?:==|\s(?:equ|neq|lss|leq|gtr|geq)\s).*?\S\s*(?:\s\S|\(|$)",
        r")",
    ))
    .ok()
});

/// A mail protocol command after CR LF: SMTP verbs and tagged IMAP commands.
static MAIL_COMMAND: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\r\n\s*(?:(?:data|quit|rset|noop|starttls)\s*(?:$|\r|\n)|help\b|(?:ehlo|helo|vrfy|expn)\s+\S",
        r"|(?:mail\s+from|rcpt\s+to)\s*:",
        r"|[a-z]*\d[a-z0-9]{0,5}\s+(?:examine|select|copy|store|list|lsub|search|fetch|login|logout|create|delete|rename|append|uid|status|capability|expunge|subscribe)\b",
        r"|[a-z0-9]{1,6}\s+(?:store|fetch|copy|search)\s+\d+(?::\d+|\*)?\s)",
    ))
    .ok()
});

/// An `alias` definition, tilde expansion of the directory stack, history expansion, a value
/// that starts by redirecting into a file below a top folder (`>/tmp/x`), or a variable
/// assigned and then run as a command.
static SHELL_SYNTAX: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:^|[;&|\n`]\s*)alias\s+(?:[-+]?[a-z]+\s+)*[^\s=]+=",
        r"|(?:^|\s)~[+-]\d*(?:$|[\s/;|&])",
        r"|(?:^|[\s;|&])!-\d+",
        r"|^\s*>>?\s*/[a-z][\w.-]*/[\w.-]",
        r"|\b[a-z_]\w*=\S*\s*(?:;|&&?|\|\|?|\n)\s*\$\{?[a-z_]\w*\}?(?:\s|$)",
    ))
    .ok()
});

/// A word split by quotes, a backslash or a caret, as in `c'a't`, `'i'fconfig`, `w"h"oami`
/// or `n^et`. An apostrophe in prose ("don't") has no closing quote this close.
static SPLIT_WORD: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"[a-z](?:'[a-z]{0,3}'|"[a-z]{0,3}")[a-z]|(?:^|[\s;|&`])(?:'[a-z]{1,3}'|"[a-z]{1,3}")[a-z]"#,
        r"|[a-z][\\^][a-z]",
    ))
    .ok()
});

/// Position of a simple command in the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// At the start of the value.
    Start,
    /// After a separator, or after a wrapper command such as `time`.
    AfterSeparator,
}

/// A value after the shell's quote removal and expansions.
struct CommandLine<'a> {
    text: Cow<'a, str>,
    /// Whether quote removal or an empty substitution joined the pieces of a word, as in
    /// `c'a't` or `pi$()ng`. Prose never does that, so any command name then counts.
    obfuscated: bool,
}

/// A regex check of the command line: the regex, the rule it reports and a test of the value's
/// bytes that is true whenever the regex can match.
/// The regular expressions of this module, compiled ahead by [`compile_patterns`].
static PATTERNS: [&LazyLock<Option<Regex>>; 7] = [
    &GLOBBED_COMMAND,
    &SHELL_WITH_COMMAND,
    &COMMAND_PATH,
    &BATCH_SYNTAX,
    &MAIL_COMMAND,
    &SHELL_SYNTAX,
    &SPLIT_WORD,
];

/// Builds the command lists and compiles the patterns of this module.
pub(super) fn compile_patterns() {
    LazyLock::force(&COMMAND_LISTS);
    for pattern in PATTERNS {
        LazyLock::force(pattern);
    }
}

/// Returns whether the command lists and every pattern of this module are built.
pub(super) fn patterns_compiled() -> bool {
    LazyLock::get(&COMMAND_LISTS).is_some()
        && PATTERNS.iter().all(|pattern| LazyLock::get(pattern).is_some())
}

type SyntaxCheck = (&'static LazyLock<Option<Regex>>, Rule, fn(&ByteSet) -> bool);

/// The regex checks that run on the value as sent and after [`deobfuscate`]. Each byte test
/// names bytes that every match contains. Deobfuscation only removes characters and adds
/// spaces, so a byte missing from the value is missing from both texts.
pub(super) static SYNTAX_CHECKS: [SyntaxCheck; 5] = [
    // `sh` (also in `$shell`), then `-` and an option letter run ending in `c`.
    (&SHELL_WITH_COMMAND, rules::RCE_UNIX_COMMAND, |bytes| bytes.contains_all(b"-csh")),
    (&COMMAND_PATH, rules::RCE_UNIX_COMMAND, |bytes| bytes.contains_all(b"bin/")),
    (&GLOBBED_COMMAND, rules::RCE_UNIX_COMMAND, |bytes| {
        bytes.contains(b'/') && bytes.contains_any(b"?*[")
    }),
    // Both `for` and `if` contain an `f`.
    (&BATCH_SYNTAX, rules::RCE_WINDOWS_SHELL, |bytes| bytes.contains(b'f')),
    // `alias x=`, `~+`, `!-1`, `>/path` and `x=y; $x` need one of these.
    (&SHELL_SYNTAX, rules::RCE_SHELL_SYNTAX, |bytes| bytes.contains_any(b"=~!>")),
];

/// Looks for OS command injection in a normalised, lowercased value whose bytes are `bytes`.
pub fn detect(value: &str, bytes: &ByteSet, kind: FieldKind, hits: &mut Vec<Rule>) {
    if value.len() < 2 {
        return;
    }
    let line = deobfuscate(value, bytes);

    if let Some(rule) = find_command(&line, kind) {
        push(hits, rule);
    }
    // Deobfuscation adds no `{`.
    if bytes.contains(b'{') && has_expanded_command(&line.text) {
        push(hits, rules::RCE_UNIX_COMMAND);
    }
    for (regex, rule, may_match) in &SYNTAX_CHECKS {
        if !may_match(bytes) {
            continue;
        }
        // The value as sent is checked too, because `+` in `~+` is not a space there.
        if regex.as_ref().is_some_and(|regex| regex.is_match(&line.text) || regex.is_match(value)) {
            push(hits, *rule);
        }
    }
    if bytes.contains(b'\r') && value.contains("\r\n") && MAIL_COMMAND.as_ref().is_some_and(|regex| regex.is_match(value)) {
        push(hits, rules::RCE_MAIL_COMMAND);
    }
}

fn push(hits: &mut Vec<Rule>, rule: Rule) {
    if !hits.contains(&rule) {
        hits.push(rule);
    }
}

/// Splits the command line into simple commands and returns the rule of the first one that
/// runs a known command.
fn find_command(line: &CommandLine<'_>, kind: FieldKind) -> Option<Rule> {
    let text: &str = &line.text;
    let mut context = CommandContext {
        position: Position::Start,
        obfuscated: line.obfuscated,
        kind,
        prose_separator: false,
        shell_separator: false,
        followed_by_separator: false,
    };
    let mut rest = text;
    loop {
        // Every separator is ASCII, so a byte search finds the same one as a character search.
        let end = rest.bytes().position(is_separator).unwrap_or(rest.len());
        let segment = &rest[..end];
        let separator = rest.as_bytes().get(end).map(|byte| char::from(*byte));
        context.followed_by_separator = separator.is_some();
        if let Some(rule) = judge_simple_command(segment, context) {
            return Some(rule);
        }
        let separator = separator?;
        rest = &rest[end + separator.len_utf8()..];
        // "Max & Ruby" or "report (copy)": a word-like command after such a separator needs
        // an argument.
        let substitution = separator == '(' && segment.ends_with(['$', '<', '>']);
        context.shell_separator = matches!(separator, ';' | '|' | '`') || substitution;
        context.prose_separator = separator == '(' && !substitution
            || separator == '&' && segment.ends_with(' ') && rest.starts_with(' ');
        context.position = Position::AfterSeparator;
    }
}

fn is_separator(byte: u8) -> bool {
    matches!(byte, b';' | b'|' | b'&' | b'\n' | b'\r' | b'`' | b'(' | b')' | b'!' | b'{' | b'}')
}

/// Facts about a simple command other than its words.
#[derive(Clone, Copy, Debug)]
struct CommandContext {
    position: Position,
    /// Whether the value split a word with quotes or empty expansions.
    obfuscated: bool,
    kind: FieldKind,
    /// Whether the separator before was an opening parenthesis or a lone `&` between
    /// spaces, which prose uses too.
    prose_separator: bool,
    /// Whether the separator before was `;`, `|` or a backtick, which prose rarely puts
    /// right before a command name.
    shell_separator: bool,
    /// Whether a separator follows the simple command.
    followed_by_separator: bool,
}

/// Decides whether one simple command runs a known command.
fn judge_simple_command(segment: &str, context: CommandContext) -> Option<Rule> {
    if runs_no_listed_command(segment) {
        return None;
    }
    judge_words(segment, context)
}

/// Decides whether one simple command runs a known command, reading its words in turn.
fn judge_words(segment: &str, mut context: CommandContext) -> Option<Rule> {
    let mut words = segment.split_ascii_whitespace().peekable();
    while let Some(word) = words.next() {
        let has_next = words.peek().is_some();
        if has_next && (is_assignment(word) || is_variable(word)) {
            continue;
        }
        let short_number = word.len() < 4 && word.bytes().all(|byte| byte.is_ascii_digit());
        if word.starts_with(['<', '>']) || short_number && context.position == Position::AfterSeparator {
            continue;
        }
        // `code=ansible-console`: a lone assignment runs nothing, but a value that is only an
        // assignment may carry a command line of its own.
        let word = if !has_next && context.position == Position::Start && is_assignment(word) {
            word.split_once('=').map_or(word, |(_, assigned)| assigned)
        } else {
            word
        };
        let name = command_name(word);
        let lists = command_lists(name);
        if lists.wrapper && has_next {
            // `time curl x` or `timeout 5 nc ...`: skip the wrapper's options and numbers.
            let arguments: Vec<&str> = words.clone().collect();
            while let Some(next) = words.peek() {
                if next.starts_with('-') || next.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.') {
                    words.next();
                } else {
                    break;
                }
            }
            let Some(next) = words.peek() else {
                // `env --version`: the wrapper itself is the command.
                return is_injected(name, &arguments, context).then(|| rule_for(name));
            };
            if is_known_command(command_name(next)) {
                return Some(rules::RCE_UNIX_COMMAND);
            }
            // `flock -u / whoami`: a distinctive command among the next few words.
            let runs_distinctive = words
                .clone()
                .take(4)
                .any(|later| command_lists(command_name(later)).distinctive);
            if runs_distinctive || lists.distinctive && context.position == Position::AfterSeparator {
                return Some(rules::RCE_UNIX_COMMAND);
            }
            context.position = Position::AfterSeparator;
            continue;
        }
        // `is_injected` rejects an unknown name before it reads the arguments.
        if !lists.is_known() {
            return None;
        }
        let arguments: Vec<&str> = words.collect();
        return is_injected(name, &arguments, context).then(|| rule_for(name));
    }
    None
}

/// Returns `true` when the first word of `segment` settles that [`judge_simple_command`]
/// returns `None`. That is so when there is no word, or when the first word names no listed
/// command and is none of the words the judge skips or reads past: an assignment, a variable,
/// a redirection or a number. Most simple commands in ordinary values start with such a word,
/// and this check reads no further than it.
fn runs_no_listed_command(segment: &str) -> bool {
    let rest = segment.trim_start_matches(|character: char| character.is_ascii_whitespace());
    let end = rest.bytes().position(|byte| byte.is_ascii_whitespace()).unwrap_or(rest.len());
    let word = &rest[..end];
    if word.is_empty() {
        return true;
    }
    let skipped_or_read_further = word.bytes().any(|byte| byte == b'=')
        || word.starts_with(['$', '<', '>'])
        || word.bytes().all(|byte| byte.is_ascii_digit());
    if skipped_or_read_further {
        return false;
    }
    let lists = command_lists(command_name(word));
    !lists.wrapper && !lists.is_known()
}

/// Words that start prose more often than they follow a command name.
const PROSE_WORDS: &[&str] = &[
    "is", "are", "was", "were", "be", "has", "have", "had", "and", "or", "the", "a", "an", "of",
    "in", "on", "for", "to", "with", "can", "will", "does", "did", "do", "it", "its", "as", "at",
    "by", "from", "that", "this", "not", "so", "but", "if",
];

/// Returns whether a command name with its arguments is an injection.
fn is_injected(name: &str, arguments: &[&str], context: CommandContext) -> bool {
    let lists = command_lists(name);
    if !lists.is_known() {
        return false;
    }
    let distinctive = lists.distinctive;
    if context.obfuscated {
        return true;
    }
    let first_is_shell = arguments.first().is_some_and(|argument| is_shell_argument(argument));
    let any_is_shell = arguments.iter().any(|argument| is_shell_argument(argument));
    match context.position {
        Position::AfterSeparator if distinctive => true,
        Position::AfterSeparator if arguments.is_empty() => {
            context.shell_separator && name.len() > 1
                || (context.followed_by_separator || name.len() > 2)
                    && !context.prose_separator
                    && context.kind != FieldKind::Header
        }
        Position::AfterSeparator => first_is_shell,
        Position::Start if arguments.is_empty() => STANDALONE_COMMANDS.contains(&name),
        // A short name at the start, such as `nc` or `ls`, also reads as initials.
        Position::Start if distinctive && name.len() > 3 => {
            any_is_shell
                || arguments.len() <= 3 && !arguments.first().is_some_and(|first| PROSE_WORDS.contains(first))
        }
        Position::Start => first_is_shell,
    }
}

/// Command names that are an injection even alone, as the whole value.
const STANDALONE_COMMANDS: &[&str] = &[
    "whoami", "ifconfig", "ipconfig", "visudo", "systeminfo", "tasklist", "netstat",
    "printenv", "dmesg", "chef-shell", "ansible-console",
];

/// Returns whether an argument is shaped like one a shell command takes: an option, a path,
/// a variable, a redirection or a glob.
fn is_shell_argument(argument: &str) -> bool {
    let first = argument.as_bytes().first().copied().unwrap_or(0);
    match first {
        b'-' => argument.len() > 1 && argument.as_bytes()[1] != b'-' || argument.len() > 2,
        b'/' | b'~' | b'$' | b'<' | b'>' | b'*' | b'\\' => true,
        b'.' => argument.starts_with("./") || argument.starts_with("../"),
        b'+' => argument.len() > 1,
        _ => {
            // A file name with a short extension, such as `passwd.txt` or `a.sh`, or a path.
            argument.contains('/')
                || argument
                    .rsplit_once('.')
                    .is_some_and(|(stem, extension)| {
                        stem.bytes().any(|byte| byte.is_ascii_alphabetic())
                            && (1..=4).contains(&extension.len())
                            && extension.bytes().all(|byte| byte.is_ascii_alphanumeric())
                    })
        }
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    })
}

/// Returns whether a word is a variable reference such as `$a` or `${a}`.
fn is_variable(word: &str) -> bool {
    word.strip_prefix('$').is_some_and(|name| {
        let name = name.trim_start_matches('{').trim_end_matches('}');
        !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    })
}

fn is_known_command(name: &str) -> bool {
    command_lists(name).is_known()
}

/// Returns the command name of a word: its last path segment, with the version of an
/// interpreter (`python3.10`) and a Windows `.exe` removed.
fn command_name(word: &str) -> &str {
    // Both separators are ASCII, so the byte after one starts a character.
    let name = match word.bytes().rposition(|byte| matches!(byte, b'/' | b'\\')) {
        Some(separator) => &word[separator + 1..],
        None => word,
    };
    let name = name.strip_suffix(".exe").unwrap_or(name);
    // A version is made of digits and dots, so a name that ends in neither has none.
    if !name.ends_with(|character: char| character.is_ascii_digit() || character == '.') {
        return name;
    }
    for interpreter in ["python", "php", "perl", "ruby", "node", "gcc"] {
        if let Some(version) = name.strip_prefix(interpreter)
            && !version.is_empty()
            && version.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.')
        {
            return interpreter;
        }
    }
    name
}

fn rule_for(name: &str) -> Rule {
    let windows = matches!(
        name,
        "powershell" | "pwsh" | "certutil" | "bitsadmin" | "wmic" | "mshta" | "rundll32"
            | "regsvr32" | "cscript" | "wscript" | "net" | "ipconfig" | "systeminfo"
            | "tasklist" | "taskkill" | "reg" | "type" | "dir" | "copy" | "del" | "findstr"
            | "regedit" | "bcdboot" | "iwr" | "iwmi" | "iex"
    );
    if windows { rules::RCE_WINDOWS_COMMAND } else { rules::RCE_UNIX_COMMAND }
}

/// Applies the shell's quote removal and the expansions that attackers use to split a
/// command name: quotes, backslashes, carets, empty substitutions, special parameters,
/// variables glued to a word, and `${IFS}`.
///
/// `bytes` are the bytes of `value`, or a superset: a value without any byte that this
/// changes is returned as it is.
fn deobfuscate<'a>(value: &'a str, bytes: &ByteSet) -> CommandLine<'a> {
    if !bytes.contains_any(b"'\"\\^$`<>+") {
        return CommandLine { text: Cow::Borrowed(value), obfuscated: false };
    }
    let mut output = String::with_capacity(value.len() + 8);
    let mut obfuscated = false;
    let mut index = 0;
    while index < value.len() {
        let rest = &value[index..];
        let previous = output.chars().last();
        let previous_is_letter = previous.is_some_and(|character| character.is_ascii_alphanumeric());
        // Every expansion removed below starts with one of these bytes.
        let may_expand = matches!(rest.as_bytes()[0], b'$' | b'`' | b'<' | b'>' | b'\'' | b'"');
        if may_expand && let Some(length) = ifs_length(rest) {
            output.push(' ');
            index += length;
            continue;
        }
        if may_expand && let Some(length) = empty_expansion_length(rest) {
            let next_is_letter = rest[length..].chars().next().is_some_and(|character| character.is_ascii_alphanumeric());
            obfuscated |= previous_is_letter || next_is_letter || rest.starts_with("$@") || rest.starts_with("$$");
            index += length;
            continue;
        }
        if may_expand && previous_is_letter && let Some(length) = glued_variable_length(rest) {
            obfuscated = true;
            index += length;
            continue;
        }
        let character = rest.chars().next().unwrap_or(' ');
        index += character.len_utf8();
        match character {
            '\'' | '"' | '\\' | '^' => {}
            // A `+` is a space in URLs and form bodies sent without a content type.
            '+' => output.push(' '),
            // A redirection ends the word before it: `cat<<<x` runs `cat`.
            '<' | '>' => {
                if previous.is_some_and(|previous| !matches!(previous, '<' | '>' | ' ')) {
                    output.push(' ');
                }
                output.push(character);
            }
            _ => output.push(character),
        }
    }
    obfuscated |= SPLIT_WORD.as_ref().is_some_and(|regex| regex.is_match(value));
    CommandLine { text: Cow::Owned(output), obfuscated }
}

/// Length of an expansion at the start of `text` that a shell replaces with nothing.
fn empty_expansion_length(text: &str) -> Option<usize> {
    for empty in ["$()", "${}", "``", "<()", ">()", "$@", "$*", "$!", "$?", "$$", "$-", "$_", "$#"] {
        if text.starts_with(empty) {
            return Some(empty.len());
        }
    }
    for quotes in ["''", "\"\""] {
        if text.starts_with(quotes) {
            return Some(2);
        }
    }
    // Any other `${...}` without spaces, such as `${gcc7.4}`, expands to nothing or fails.
    let braced = text.strip_prefix("${")?;
    let end = braced.find('}')?;
    (end <= 32 && !braced[..end].contains(char::is_whitespace)).then_some(end + 3)
}

fn ifs_length(text: &str) -> Option<usize> {
    ["${ifs}", "$ifs"].iter().find(|ifs| text.starts_with(**ifs)).map(|ifs| ifs.len())
}

/// Length of a variable reference (`$u`, `${u}`) glued to the word before it, as in `cu$u`.
fn glued_variable_length(text: &str) -> Option<usize> {
    let body = text.strip_prefix('$')?;
    if let Some(braced) = body.strip_prefix('{') {
        let end = braced.find('}')?;
        let name = &braced[..end];
        return (!name.is_empty() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'))
            .then_some(end + 3);
    }
    let length = body.bytes().take_while(|byte| byte.is_ascii_alphanumeric() || *byte == b'_').count();
    (length > 0 && length <= 3).then_some(length + 1)
}

/// Returns whether brace expansion builds a command name: `c{a,oun}t`, `{,ifconfig}` or
/// `{l,-lh}s`. A plain list such as `{id,name}` is left alone, because field lists in APIs
/// look the same.
fn has_expanded_command(value: &str) -> bool {
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return false;
        };
        let inner = &after[..close];
        let prefix = rest[..open].rsplit(|character: char| !character.is_ascii_alphanumeric()).next().unwrap_or("");
        let suffix_end = after[close + 1..].find(|character: char| !character.is_ascii_alphanumeric()).unwrap_or(after.len() - close - 1);
        let suffix = &after[close + 1..close + 1 + suffix_end];
        if inner.contains(',') && !inner.contains(char::is_whitespace) && inner.len() < 64 {
            let alternatives: Vec<&str> = inner.split(',').collect();
            let shell_shaped = !prefix.is_empty()
                || !suffix.is_empty()
                || alternatives.iter().any(|alternative| alternative.is_empty() || alternative.starts_with('-'));
            let builds_command = alternatives.iter().any(|alternative| {
                let word = format!("{prefix}{alternative}{suffix}");
                is_known_command(command_name(&word))
            });
            if shell_shaped && builds_command {
                return true;
            }
        }
        rest = &after[close + 1..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lists_match_name_lists() {
        let names = DISTINCTIVE_COMMAND_NAMES.iter().chain(WORD_COMMAND_NAMES).chain(WRAPPER_COMMAND_NAMES);
        for name in names {
            assert!(name.len() <= MAX_COMMAND_NAME_BYTES, "{name:?} is longer than MAX_COMMAND_NAME_BYTES");
            let expected = CommandLists {
                distinctive: DISTINCTIVE_COMMAND_NAMES.contains(name),
                word: WORD_COMMAND_NAMES.contains(name),
                wrapper: WRAPPER_COMMAND_NAMES.contains(name),
            };
            assert_eq!(command_lists(name), expected, "name {name:?}");
        }
        for unknown in ["", "apples", "catalogue", "x".repeat(MAX_COMMAND_NAME_BYTES + 1).as_str()] {
            assert_eq!(command_lists(unknown), CommandLists::default(), "name {unknown:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        #[test]
        fn first_word_shortcut_keeps_judgement(
            words in proptest::collection::vec(
                "cat|ls|whoami|time|env|nohup|sudo|apples|leave|a=b|x=ls|\\$a|\\$\\{a\\}|<x|>/tmp/x|12|1234|-la|/etc/passwd|/bin/ls|python3\\.10|c\\.exe|[a-z]{1,6}",
                0..5,
            ),
            separators in proptest::collection::vec("[ \t\x0c]{1,2}", 5),
            position_start in proptest::bool::ANY,
            flags in proptest::collection::vec(proptest::bool::ANY, 4),
        ) {
            let mut segment = String::from(separators[0].as_str());
            for (index, word) in words.iter().enumerate() {
                segment.push_str(word);
                segment.push_str(&separators[(index + 1) % separators.len()]);
            }
            let context = CommandContext {
                position: if position_start { Position::Start } else { Position::AfterSeparator },
                obfuscated: flags[0],
                kind: FieldKind::Query,
                prose_separator: flags[1],
                shell_separator: flags[2],
                followed_by_separator: flags[3],
            };
            proptest::prop_assert_eq!(
                judge_simple_command(&segment, context),
                judge_words(&segment, context),
                "segment {:?}", segment
            );
        }
    }

    #[test]
    fn command_name_strips_path_extension_and_version() {
        for (word, expected) in [
            ("/usr/bin/python3.10", "python"),
            ("c:\\windows\\cmd.exe", "cmd"),
            ("perl5", "perl"),
            ("php-fpm", "php-fpm"),
            ("nodejs", "nodejs"),
            ("gcc-12", "gcc-12"),
            ("bin/", ""),
            ("7z", "7z"),
            ("ls", "ls"),
        ] {
            assert_eq!(command_name(word), expected, "word {word:?}");
        }
    }
}
