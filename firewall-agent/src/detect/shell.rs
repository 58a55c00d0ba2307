//! OS command injection: a command name where a shell would start a new command.
//!
//! The value is first stripped of the quoting and escaping that a shell removes before it runs
//! a word (`c'a't`, `c\at`, `w"h"oami`, `$@`). Then it is searched for a separator (`;`, `|`,
//! `&`, a line break, a backtick or `$(`) followed by a known command. Command names that are also
//! English words (`cat`, `more`, `set`) count only with an argument that looks like a shell
//! argument (`-l`, a path, a number, a redirection), so that "apples; more later" is not a
//! finding.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::{Rule, rules};


/// Commands that no ordinary text places after a shell separator.
const STRONG_COMMANDS: &str = concat!(
    "whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|csh|tcsh|dash|fish|python[0-9.]*|",
    "perl|ruby|php[0-9]?|lua|nodejs|base64|xxd|chmod|chown|chgrp|nslookup|ifconfig|netstat|",
    "crontab|mkfifo|socat|telnet|useradd|usermod|passwd|visudo|sudo|nohup|busybox|getent|",
    "hostname|lsof|pkill|killall|xterm|nmap|tcpdump|openssl|gcc|cc|awk|gawk|nawk|sed|",
    "readelf|objdump|strings|systemctl|shutdown|reboot|wall|finger|traceroute|dig|rsync|scp|",
    "sftp|ssh|tftp|ftp|gdb|strace|ltrace|env|printenv|export|eval|exec|source|uniq|sort|",
    "timeout|xargs|tee|dd|od|hexdump|rev|tac|nl|paste|cut|tr|grep|egrep|fgrep|rm|rmdir|",
    "mkdir|mv|cp|ln|tar|gzip|gunzip|zip|unzip|bzip2|7z|ls|ps|id|pwd|vi|vim|nano|ed|emacs|",
    "cat|head|tail|less|more|echo|printf|sleep|ping|kill|chroot|mount|umount|apt|apt-get|",
    "yum|dnf|pip|pip3|npm|gem|java|javac|jshell|powershell|pwsh|certutil|bitsadmin|wmic|",
    "mshta|rundll32|regsvr32|cscript|wscript|net|ipconfig|systeminfo|tasklist|taskkill|reg|",
    "type|dir|copy|del|find|findstr|set|touch|file|which|whereis|locate|history|more|diff|",
    "wc|md5sum|sha1sum|sha256sum|last|w|who|users|groups|uptime|df|du|free|top|htop|kill|",
    "chattr|lsattr|setfacl|getfacl|iptables|nft|ip|route|arp|host|date|time|test|true|false"
);

/// Command names that are also common words: they need a shell-like argument.
const WORD_COMMANDS: &[&str] = &[
    "cat", "head", "tail", "less", "more", "echo", "printf", "sleep", "ping", "kill", "type",
    "dir", "copy", "del", "find", "set", "touch", "file", "which", "whereis", "locate",
    "history", "diff", "wc", "last", "w", "who", "users", "groups", "uptime", "df", "du", "free",
    "top", "ip", "route", "host", "date", "time", "test", "true", "false", "net", "reg", "ls",
    "ps", "id", "pwd", "vi", "ed", "cc", "sh", "nc", "rm", "mv", "cp", "ln", "tr", "cut",
    "paste", "nl", "rev", "tac", "od", "dd", "tee", "sort", "uniq", "source", "exec", "eval",
    "export", "env", "wall", "finger", "dig", "fish", "tar", "zip", "gem", "pip", "npm", "apt",
    "mount", "lua", "java", "ruby", "perl", "php", "python", "awk", "sed", "grep", "mkdir",
    "strings", "shutdown", "reboot", "timeout", "users", "arp",
];

/// Commands that run the command after them, so that command counts as if after a separator.
const PREFIX_COMMANDS: &str = "time|nohup|sudo|env|strace|ltrace|exec|xargs|timeout|nice|watch|busybox|command|builtin";

/// A separator, an optional path before the command, the command name and what follows it.
static COMMAND_AFTER_SEPARATOR: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(^|[;|&`\n\r]|\$\(|\|\||&&|\b(?:{PREFIX_COMMANDS})\s)\s*(?:[a-z0-9_.?*~-]*/)*({STRONG_COMMANDS})(\s+\S|\s*$|[;|&`<>)$])"
    ))
    .ok()
});

/// A shell-like argument: an option, a path, a variable, a number, a redirection or a pipe.
static SHELL_ARGUMENT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(?:\s+(?:-{1,2}[a-z0-9]|/|~|\$|\.{1,2}/|[<>|;&`]|\d|\*|[a-z0-9_.-]+\.[a-z0-9]{1,4}\b|'|\x22)|\s*$|\s*[;|&`<>)$])").ok()
});

/// Globbed command paths such as `/???/c?t` or `/bin/n[c]`.
static GLOBBED_COMMAND: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:^|[;|&`\s(=])/(?:[a-z?*\[\]]{1,8}/)+[a-z]{0,3}[?*\[][a-z?*\[\]]{0,6}(?:\s|$|[;|&`)])").ok()
});

/// A shell started with a command string, or started through `$SHELL`.
static SHELL_WITH_COMMAND: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:\b(?:ba|z|k|c|tc|da)?sh|\$\{?shell\}?)\s+-[a-z]*c\b|\bif\s+(?:/i\s+)?(?:not\s+)?(?:exist|errorlevel|defined)\b|\bfor\s+(?:/[dlrf]\s+)*%%?[a-z~]").ok()
});

/// Looks for OS command injection in a normalised, lowercased value.
pub fn detect(value: &str, hits: &mut Vec<Rule>) {
    if !value.bytes().any(|byte| matches!(byte, b';' | b'|' | b'&' | b'`' | b'$' | b'\n' | b'\r' | b'/' | b' ')) {
        return;
    }
    let unquoted = unquote(value);

    if let Some(regex) = COMMAND_AFTER_SEPARATOR.as_ref() {
        let mut start = 0;
        while let Some(captures) = unquoted.get(start..).and_then(|rest| regex.captures(rest)) {
            let (Some(whole), Some(separator), Some(command)) =
                (captures.get(0), captures.get(1), captures.get(2))
            else {
                break;
            };
            let after = &unquoted[start + command.end()..];
            if is_injection(separator.as_str(), command.as_str(), after) {
                let rule = if is_windows_command(command.as_str()) {
                    rules::RCE_WINDOWS_COMMAND
                } else {
                    rules::RCE_UNIX_COMMAND
                };
                if !hits.contains(&rule) {
                    hits.push(rule);
                }
                return;
            }
            start += whole.start() + separator.len().max(1);
            if start >= unquoted.len() {
                break;
            }
        }
    }

    if let Some(regex) = SHELL_WITH_COMMAND.as_ref()
        && regex.is_match(&unquoted)
        && !hits.contains(&rules::RCE_UNIX_COMMAND)
    {
        hits.push(rules::RCE_UNIX_COMMAND);
    }

    if let Some(regex) = GLOBBED_COMMAND.as_ref()
        && regex.is_match(&unquoted)
        && !hits.contains(&rules::RCE_UNIX_COMMAND)
    {
        hits.push(rules::RCE_UNIX_COMMAND);
    }
}

/// Decides whether a command name after a separator is an injection.
fn is_injection(separator: &str, command: &str, after: &str) -> bool {
    let shell_argument = SHELL_ARGUMENT
        .as_ref()
        .is_some_and(|regex| regex.is_match(after));
    if separator.is_empty() {
        // At the start of the value only a command followed by an option, a path or a
        // redirection counts, because a value such as "python" or "more" is an ordinary word.
        let argument = after.trim_start();
        return after.starts_with(char::is_whitespace)
            && argument.len() > 1
            && argument.starts_with(['-', '/', '|', ';', '>', '<', '$', '~', '`']);
    }
    if WORD_COMMANDS.contains(&command) {
        // "Max & Ruby" or "cats & more": a lone `&` before a last word is prose.
        let prose_ampersand = separator == "&" && after.trim().is_empty();
        return shell_argument && !prose_ampersand;
    }
    true
}

fn is_windows_command(command: &str) -> bool {
    matches!(
        command,
        "powershell" | "pwsh" | "certutil" | "bitsadmin" | "wmic" | "mshta" | "rundll32"
            | "regsvr32" | "cscript" | "wscript" | "net" | "ipconfig" | "systeminfo"
            | "tasklist" | "taskkill" | "reg" | "type" | "dir" | "copy" | "del" | "findstr"
    )
}

/// Removes what a shell removes before it runs a word: quotes, backslashes, `$@`, `$*` and
/// empty `${}` or `$()` expansions, and turns `${IFS}` into a space.
fn unquote(value: &str) -> Cow<'_, str> {
    let replaced = if value.contains('$') {
        Cow::Owned(
            value
                .replace("${ifs}", " ")
                .replace("$ifs", " ")
                .replace("$@", "")
                .replace("$*", "")
                .replace("${}", "")
                .replace("$()", ""),
        )
    } else {
        Cow::Borrowed(value)
    };
    if !replaced.contains(['\'', '"', '\\', '^']) {
        return replaced;
    }
    Cow::Owned(
        replaced
            .chars()
            .filter(|character| !matches!(character, '\'' | '"' | '\\' | '^'))
            .collect(),
    )
}
