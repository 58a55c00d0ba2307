//! Signature detectors for the families that have a fixed vocabulary: path traversal and local
//! file inclusion, remote file inclusion and request forgery, OS command injection, template
//! injection, PHP, Java and serialized gadgets, and protocol anomalies.
//!
//! The patterns run on the normalised, lowercased value, so they are written in lowercase and
//! need no encoding variants. Patterns that would match ordinary words require the context an
//! attack needs, such as a shell separator before a command name or an operator inside a
//! template expression.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::Regex;

use super::byte_set::ByteSet;
use super::normalise::Normalised;
use super::php::SignatureRow;
use super::{FieldKind, Rule, rules};


/// The signature patterns, compiled one by one behind a literal prefilter.
struct Signatures {
    regexes: Vec<Regex>,
    rules: Vec<Rule>,
    /// Matches every anchor of every pattern in one pass over the text. Without it, every
    /// pattern runs.
    anchors: Option<AhoCorasick>,
    /// For each anchor, the index of the pattern it belongs to.
    anchor_owners: Vec<usize>,
    /// The patterns of PHP function calls, which all need a `(`. Names such as `ord` and
    /// `file` start words like "order", so the bracket test skips most of their candidates.
    bracket_calls: u128,
}

/// Compiled signatures. A unit test checks that every pattern and the anchor automaton
/// compile, so the empty fallbacks never ship.
static SIGNATURES: LazyLock<Signatures> = LazyLock::new(|| {
    let table = signature_table();
    let mut regexes = Vec::with_capacity(table.len());
    let mut rules = Vec::with_capacity(table.len());
    let mut anchor_texts = Vec::new();
    let mut anchor_owners = Vec::new();
    for (pattern, rule, anchors) in table {
        let Ok(regex) = Regex::new(pattern) else {
            continue;
        };
        for anchor in anchors {
            anchor_texts.push(*anchor);
            anchor_owners.push(regexes.len());
        }
        regexes.push(regex);
        rules.push(rule);
    }
    // A DFA takes more memory than the default NFA but fewer instructions per byte, and this
    // search runs on every inspected value.
    let anchors = AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .kind(Some(AhoCorasickKind::DFA))
        .build(&anchor_texts)
        .ok();
    let bracket_calls = rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| BRACKET_CALL_RULES.contains(&rule.id))
        .fold(0u128, |mask, (index, _)| mask | 1u128 << index);
    Signatures { regexes, rules, anchors, anchor_owners, bracket_calls }
});

/// Rules whose every pattern needs a call bracket, `(`.
const BRACKET_CALL_RULES: &[&str] = &[rules::PHP_FUNCTION.id, rules::PHP_FUNCTION_CALL.id];

impl Signatures {
    /// Returns the indexes of the patterns whose anchors occur in `text`, as a bit set. The
    /// table contains fewer than 128 patterns, which a unit test checks.
    fn candidates(&self, text: &str) -> u128 {
        let Some(anchors) = &self.anchors else {
            return u128::MAX;
        };
        let mut candidates = 0u128;
        for found in anchors.find_overlapping_iter(text) {
            if let Some(owner) = self.anchor_owners.get(found.pattern().as_usize()) {
                candidates |= 1u128 << owner;
            }
        }
        candidates
    }
}

/// Lists the signature patterns, each with the rule it reports and its anchors: literals of which
/// at least one occurs in every text the pattern matches.
fn signature_table() -> Vec<SignatureRow> {
    let mut table: Vec<SignatureRow> = vec![
        // Sensitive files of Unix and Windows systems and web servers.
        (
            concat!(
                r"(?:^|[/\\=\s:;,'\x22(])(?:etc/(?:passwd|shadow|group|hosts|issue|master\.passwd|sudoers|crontab|",
                r"profile|fstab|resolv\.conf|motd|hostname|security/|mysql/|httpd/|apache2?/|nginx/|ssh/|pam\.d)",
                r"|proc/(?:self|\d+)/|windows/(?:win\.ini|system\.ini|system32|repair)|boot\.ini|win\.ini|",
                r"system32/|winnt/|inetpub/|var/log/|sys/(?:class|kernel|devices|module|power)\b|\.ssh/|id_[rd]sa\b|authorized_keys|\.bash_history|\.htaccess|",
                r"\.htpasswd|web\.config|web-inf/|meta-inf/|wp-config\.php|\.git/|\.svn/|\.aws/|\.docker/|\.kube/)"
            ),
            rules::LFI_SENSITIVE_FILE, &["etc/", "proc/", "windows/", "boot.ini", "win.ini", "system32/", "winnt/", "inetpub/", "var/log/", "sys/", ".ssh/", "id_rsa", "id_dsa", "authorized_keys", ".bash_history", ".htaccess", ".htpasswd", "web.config", "web-inf/", "meta-inf/", "wp-config.php", ".git/", ".svn/", ".aws/", ".docker/", ".kube/"],
        ),
        (r"(?:^|/)\.env(?:$|[./])", rules::LFI_SENSITIVE_FILE, &[".env"]),
        // Kernel state, shell histories, debug logs and database dumps that web roots leak.
        (
            concat!(
                r"(?:^|[/\\=\s:])proc/(?:net/|interrupts|cpuinfo|meminfo|version|cmdline|mounts|kcore|partitions|modules|sched_debug)",
                r"|(?:^|[/\\])\.(?:bash_|zsh_|sh_|mysql_|psql_|python_|node_repl_|lesshst|)history$",
                r"|wp-content/(?:debug|errors?)\.log$",
                r"|(?:^|[/\\])[\w-]*(?:backup|dump|database|db)[\w-]*\.sql(?:\.(?:zip|gz|bz2|xz|tar|tgz|7z|rar))?$",
            ),
            rules::LFI_SENSITIVE_FILE, &["proc/", "history", "wp-content/", ".sql"],
        ),
        // Stream wrappers that read local files or run code.
        (
            r"\b(?:php|phar|zip|expect|glob|zlib|compress\.(?:zlib|bzip2)|rar|ogg|ssh2(?:\.(?:shell|exec|tunnel|sftp|scp))?|jar|netdoc)://",
            rules::LFI_STREAM_WRAPPER, &["://"],
        ),
        (r"\bfile:/{1,3}[a-z/.]", rules::LFI_FILE_URL, &["file:"]),
        // Request forgery towards cloud metadata services, and schemes only attacks use.
        (
            r"(?:169\.254\.169\.254|metadata\.google\.internal|100\.100\.100\.200|fd00:ec2::254|metadata\.azure|metadata\.packet\.net|metadata\.tencentyun\.com|169\.254\.170\.2|192\.0\.0\.192|/latest/(?:meta-data|user-data|api/token)\b)",
            rules::RFI_METADATA_ADDRESS, &["169.254.169.254", "metadata.google.internal", "100.100.100.200", "fd00:ec2::254", "metadata.azure", "metadata.packet.net", "metadata.tencentyun.com", "169.254.170.2", "192.0.0.192", "/latest/"],
        ),
        (r"\b(?:gopher|dict|ldap|tftp)://", rules::RFI_SCHEME, &["://"]),
        // A URL whose host is an IP address, or which ends in `?` to cut off an appended path.
        (
            r"(?:https?|ftps?)://(?:[^/@\s]*@)?\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
            rules::RFI_IP_URL, &["://"],
        ),
        (r"^(?:https?|ftps?)://\S+\?+$", rules::RFI_TRAILING_QUESTION_MARK, &["://"]),
        // Shell syntax that only command injection uses.
        (r"\$\{?ifs\b", rules::RCE_SHELL_SYNTAX, &["$ifs", "${ifs"]),
        (r"\(\s*\)\s*\{", rules::RCE_SHELLSHOCK, &["{"]),
        (r"/dev/(?:tcp|udp)/", rules::RCE_SHELL_SYNTAX, &["/dev/"]),
        (r"\{[a-z]{2,},[^}\s]*\}", rules::RCE_BRACE_EXPANSION, &["{"]),
        (
            concat!(
                r"\b(?:invoke-(?:expression|webrequest|command|restmethod|item|wmimethod|shellcode)|iex\s*\(|",
                r"new-object\s+(?:-\w+\s+)?(?:system\.)?net\.webclient|downloadstring|downloadfile|",
                r"start-process|get-(?:content|childitem|process|wmiobject|itemproperty)\b|",
                r"set-(?:content|executionpolicy|itemproperty)\b|add-type\b|out-file\b|remove-item\b|",
                r"-encodedcommand|-executionpolicy|-windowstyle\s+hidden)"
            ),
            rules::RCE_POWERSHELL, &["invoke-", "iex", "new-object", "downloadstring", "downloadfile", "start-process", "get-", "set-", "add-type", "out-file", "remove-item", "-encodedcommand", "-executionpolicy", "-windowstyle"],
        ),
        (
            r"(?:%comspec%|cmd(?:\.exe)?\s+/[ck]\b|%systemroot%|%windir%|\bfor\s+/f\b|%errorlevel%)",
            rules::RCE_WINDOWS_SHELL, &["%comspec%", "cmd", "%systemroot%", "%windir%", "for", "%errorlevel%"],
        ),
        // Template expressions with an operator, call or attribute access inside.
        (
            concat!(
                r"\{\{[^}]{0,200}?(?:\d\s*[*+/%-]\s*\d|__|\(|\[|\bconfig\b|\bself\b|request\.|lipsum|cycler|",
                r"joiner|namespace|\|\s*(?:attr|safe|e|join|map))"
            ),
            rules::SSTI_EXPRESSION, &["{{"],
        ),
        (
            r"[$#*@]\{[^}]{0,200}?(?:\d\s*[*+/%-]\s*\d|\(|\.getclass|\bt\s*\(|java\.|new\s|\[|@)",
            rules::SSTI_EXPRESSION, &["${", "#{", "*{", "@{"],
        ),
        (r"<%=?.{0,200}?%>", rules::SSTI_EXPRESSION, &["<%"]),
        (r"\[%.{0,200}?%\]", rules::SSTI_EXPRESSION, &["[%"]),
        (
            r"\{%\s*(?:if|for|import|include|set|debug|load|extends|macro|print|with|raw)\b",
            rules::SSTI_STATEMENT, &["{%"],
        ),
        // Code injection into Node.js and prototype pollution.
        (
            r"__proto__|constructor\s*\]?\s*(?:\.|\[)\s*['\x22`]?prototype",
            rules::SSTI_PROTOTYPE_POLLUTION, &["__proto__", "constructor"],
        ),
        (
            concat!(
                r"require\s*\(\s*['\x22`]?(?:child_process|fs|os|net|vm|http|process)\b|child_process|",
                r"process\s*\.\s*(?:mainmodule|binding|env\b|exit|kill|dlopen)|global\s*\.\s*process|",
                r"constructor\s*\.\s*constructor|constructor\s*\(\s*['\x22`]return|_\$\$nd_func\$\$_|",
                r"\bprocess\s*\[\s*['\x22`]?(?:mainmodule|env|binding|exit|kill)|\bmodule\s*\.\s*exports\s*=|__js_function|",
                r"\bconsole\s*(?:\.\s*\w+|\[\s*['\x22`]\w+['\x22`]\s*\])\s*(?:\.\s*(?:call|apply|bind)\s*)?\(|",
                r"\b(?:process|require|global)\s*\[\s*(?:['\x22`]?(?:mainmodule|env|binding|exit|kill|child_process)|\w+\.\w)|\bnew\s+function\s*\(|\bfunction\s*\(\s*\)\s*\{[^}]*\breturn\s+process\b"
            ),
            rules::SSTI_NODEJS_INJECTION, &["require", "child_process", "process", "global", "constructor", "_$$nd_func$$_", "module", "__js_function", "console", "function"],
        ),
        // ORM lookup keys that walk relations or filter on secrets.
        (
            concat!(
                r"(?:^|[\x22'\s{,&?])[a-z][a-z0-9_]*?__(?:[a-z][a-z0-9_]*?__)+(?:i?exact|i?contains|in|gte?|lte?|i?startswith|i?endswith|range|isnull|i?regex|has_keys?|has_any_keys|contained_by|overlap|search)(?:$|[\x22'\s=:,}&])",
                r"|(?:^|[\x22'\s{,&?])(?:[a-z0-9_]*_)?(?:password|passwd|pass|username|user|email|token|secret|hash|salt|role|roles|is_admin|is_staff|is_superuser|permissions?|groups?|data)__(?:i?exact|i?contains|in|gte?|lte?|i?startswith|i?endswith|range|isnull|i?regex|has_keys?|has_any_keys|contained_by|overlap)(?:$|[\x22'\s=:,}&])",
            ),
            rules::SSTI_ORM_LOOKUP, &["__"],
        ),
        // Database system catalogues.
        (
            r"\b(?:information_schema|sqlite_master|sqlite_schema|pg_catalog|pg_shadow|sysobjects|syscolumns|sysdatabases|msysobjects|msysaccessobjects|msysqueries|msysrelationships|msdb|msdasql|tempdb|mysql\.(?:user|db)|all_tables|user_tables|dba_users|xp_cmdshell|sp_executesql)\b",
            rules::SQLI_SYSTEM_TABLE, &["information_schema", "sqlite_master", "sqlite_schema", "pg_catalog", "pg_shadow", "sysobjects", "syscolumns", "sysdatabases", "msys", "msdb", "msdasql", "tempdb", "mysql.user", "mysql.db", "all_tables", "user_tables", "dba_users", "xp_cmdshell", "sp_executesql"],
        ),
        // A time delay anywhere in a value, also past the tokens the SQL detector reads, as
        // in a long User-Agent header that ends in `waitfor delay '0:0:15'`.
        (r"\bwaitfor\s+(?:delay|time)\s*['\x22]", rules::SQLI_FUNCTION, &["waitfor"]),
        // XML entity declarations, in a document type declaration or on their own.
        (r"<!entity\s", rules::XXE_ENTITY_DECLARATION, &["<!entity"]),
        // The numbers that hang old PHP and Java string-to-double conversions.
        (r"2\.225073858507201[12]e-0*308\b", rules::PROTOCOL_FLOAT_DOS, &["2.225073858507201"]),
        // Java and expression language.
        (
            concat!(
                r"java\.lang\.(?:runtime|processbuilder|system|reflect|class|thread)|getruntime\s*\(|",
                r"processbuilder|\$\{\s*jndi\s*:|jndi:(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http)|",
                r"class\.module\.classloader|\bclassloader\b|javax\.script|org\.apache\.commons\.collections|",
                r"(?:invoker|chained|constant|instantiate|clone)transformer|",
                r"(?:instantiate|prototypeclone|prototypeserialization)factory|(?:while|for)closure|",
                r"xwork\.methodaccessor|#_memberaccess|ognlcontext|com\.opensymphony|%\{\s*\(#|",
                r"java\.io\.(?:file|inputstream)|java\.util\.scanner|sun\.misc\.|\.forname\s*\(|",
                r"com\.sun\.rowset|jdbcrowsetimpl|\.getclass\s*\(\s*\)\s*\.|java\.beans\.xmldecoder"
            ),
            rules::JAVA_CODE_INJECTION, &["java.", "getruntime", "processbuilder", "jndi", "classloader", "javax.script", "org.apache.commons.collections", "transformer", "factory", "closure", "xwork.methodaccessor", "#_memberaccess", "ognlcontext", "com.opensymphony", "%{", "java.io", "java.util", "sun.misc.", ".forname", "com.sun.rowset", "jdbcrowsetimpl", ".getclass", "java.beans"],
        ),
        (r"\bruntime\s*\.\s*(?:exec|getruntime|instantiate)", rules::JAVA_CODE_INJECTION, &["runtime"]),
        (r"\baced0005", rules::DESERIALIZATION_JAVA, &["aced0005"]),
        // Serialized objects.
        (
            r#"\b[oc]:\d+:"[^"]{1,200}":\d+:\{"#,
            rules::DESERIALIZATION_PHP, &["\":"],
        ),
        (
            concat!(
                r#""\$type"\s*:\s*"[^"]*(?:system\.|windows\.)|objectdataprovider|typeconfusedelegate|"#,
                r#"system\.diagnostics\.process|"@type"\s*:\s*"(?:com|org|java)\."#
            ),
            rules::DESERIALIZATION_DOTNET_JSON, &["$type", "objectdataprovider", "typeconfusedelegate", "system.diagnostics.process", "@type"],
        ),
        (
            r"!!(?:python/|javax?\.|ruby/)|!ruby/object|c__builtin__|\bc(?:os|posix|subprocess|builtins)\n(?:system|popen|check_output)",
            rules::DESERIALIZATION_YAML_PICKLE, &["!!", "!ruby/object", "c__builtin__", "\n"],
        ),
    ];
    table.extend(super::php::signature_rows());
    table
}

/// Returns the number of signature patterns compiled and the number written, for the test
/// that checks that none was lost.
#[cfg(test)]
pub(super) fn signature_counts() -> (usize, usize) {
    (SIGNATURES.regexes.len(), signature_table().len())
}

/// Returns the gadget found in Base64 runs of `text`, for the test that compares the search
/// with a plain one.
#[cfg(test)]
pub(super) fn base64_gadget_label(text: &str) -> Option<&'static str> {
    base64_gadget(text).map(|gadget| match gadget {
        Base64Gadget::Java => "java",
        Base64Gadget::NodeFunction => "node",
    })
}

/// Returns the rules of every signature that matches `text`, without the prefilter, for the
/// test that checks that the prefilter loses no match.
#[cfg(test)]
pub(super) fn signature_rules_unfiltered(text: &str) -> Vec<&'static str> {
    let signatures = &*SIGNATURES;
    (0..signatures.regexes.len())
        .filter(|index| signatures.regexes[*index].is_match(text))
        .map(|index| signatures.rules[index].id)
        .collect()
}

/// Returns the rules of every signature that matches `text` through the prefilter.
#[cfg(test)]
pub(super) fn signature_rules_filtered(text: &str) -> Vec<&'static str> {
    let signatures = &*SIGNATURES;
    let mut candidates = signatures.candidates(text);
    if !text.contains('(') {
        candidates &= !signatures.bracket_calls;
    }
    (0..signatures.regexes.len())
        .filter(|index| candidates & (1u128 << index) != 0 && signatures.regexes[*index].is_match(text))
        .map(|index| signatures.rules[index].id)
        .collect()
}

/// Compiles the signatures of this module.
pub(super) fn compile_patterns() {
    LazyLock::force(&SIGNATURES);
    LazyLock::force(&CASED_SIGNATURES);
}

/// Returns whether the signatures of this module are compiled.
pub(super) fn patterns_compiled() -> bool {
    LazyLock::get(&SIGNATURES).is_some() && LazyLock::get(&CASED_SIGNATURES).is_some()
}

/// Rules matched on the value with its case kept.
static CASED_SIGNATURES: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"rO0AB|AAEAAAD/////|H4sIAAAAAAAA[A-Za-z0-9+/]{0,8}rO0").ok());

/// Returns `false` only when [`CASED_SIGNATURES`] cannot match the value whose lowercased text
/// is `folded` and whose bytes are `bytes`. Every cased signature contains `rO0` or `AAEAAAD/`,
/// and lowercasing turns them into `ro0` and `aaeaaad/`.
fn may_match_cased_signature(folded: &str, bytes: &ByteSet) -> bool {
    (bytes.contains_all(b"ro0") && folded.contains("ro0"))
        || (bytes.contains_all(b"aed/") && folded.contains("aaeaaad/"))
}

/// Most Base64 runs decoded per value, bounding the work on long values.
const MAX_BASE64_RUNS: usize = 16;

/// Shortest Base64 run worth decoding. The shortest gadget name, `runtime`, takes 10 Base64
/// characters.
const MIN_BASE64_RUN: usize = 10;

/// Gadget and class names whose Base64 form hides Java deserialization payloads.
const GADGET_NAMES: &[&[u8]] = &[
    b"runtime",
    b"processbuilder",
    b"clonetransformer",
    b"forclosure",
    b"instantiatefactory",
    b"instantiatetransformer",
    b"invokertransformer",
    b"prototypeclonefactory",
    b"prototypeserializationfactory",
    b"whileclosure",
    b"chainedtransformer",
    b"classloader",
    b"java.lang",
];

/// Reports the encoding anomalies that normalisation met.
pub fn detect_anomalies(value: &Normalised<'_>, hits: &mut Vec<Rule>) {
    let anomalies = value.anomalies;
    if anomalies.overlong_utf8 {
        hits.push(rules::PROTOCOL_OVERLONG_UTF8);
    }
    if anomalies.nul_byte {
        hits.push(rules::PROTOCOL_NUL_BYTE);
    }
    if anomalies.control_byte {
        hits.push(rules::PROTOCOL_CONTROL_BYTE);
    }
    if anomalies.deep_encoding {
        hits.push(rules::PROTOCOL_DEEP_ENCODING);
    }
}

/// Runs the signature detectors on one normalised value.
pub fn detect(value: &Normalised<'_>, bytes: &ByteSet, kind: FieldKind, hits: &mut Vec<Rule>) {
    let text: &str = &value.folded;
    let signatures = &*SIGNATURES;
    let mut candidates = signatures.candidates(text);
    if !bytes.contains(b'(') {
        candidates &= !signatures.bracket_calls;
    }
    while candidates != 0 {
        let index = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        if let (Some(regex), Some(rule)) = (signatures.regexes.get(index), signatures.rules.get(index))
            && !hits.contains(rule)
            && regex.is_match(text)
        {
            hits.push(*rule);
        }
    }

    if bytes.contains(b'.') {
        detect_traversal(text, kind, hits);
    }
    if kind == FieldKind::Path {
        detect_restricted_path(text, hits);
    }
    if kind == FieldKind::FileName && is_php_file_name(text) {
        hits.push(rules::PHP_FILE_UPLOAD);
    }
    super::shell::detect(text, bytes, kind, hits);

    if may_match_cased_signature(text, bytes)
        && let Some(regex) = CASED_SIGNATURES.as_ref()
        && regex.is_match(&value.cased)
    {
        hits.push(rules::DESERIALIZATION_JAVA);
    }
    match base64_gadget(&value.cased) {
        Some(Base64Gadget::Java) => hits.push(rules::JAVA_BASE64_GADGET),
        Some(Base64Gadget::NodeFunction) => hits.push(rules::SSTI_NODEJS_INJECTION),
        None => {}
    }
}

/// Counts `../` steps (or `..\`, or longer runs of dots). One step is common in relative links;
/// two or more climb out of the directory a file name was meant to stay in.
fn detect_traversal(text: &str, kind: FieldKind, hits: &mut Vec<Rule>) {
    if !text.contains("..") {
        return;
    }
    let bytes = text.as_bytes();
    let mut steps = 0;
    // A backslash step, `..;` (which Tomcat reads as `..`) or a step in an upload's file
    // name has no place in a relative link, so one of them is enough.
    let mut strong_step = kind == FieldKind::FileName;
    let mut index = 0;
    while index + 2 < bytes.len() {
        let at_start = index == 0 || matches!(bytes[index - 1], b'/' | b'\\' | b'=' | b' ' | b'"' | b'\'' | b':');
        if at_start && bytes[index] == b'.' && bytes[index + 1] == b'.' {
            let mut end = index + 2;
            while end < bytes.len() && bytes[end] == b'.' {
                end += 1;
            }
            if end < bytes.len() && matches!(bytes[end], b'/' | b'\\' | b';') {
                strong_step |= bytes[end] != b'/';
                steps += 1;
                index = end + 1;
                continue;
            }
        }
        index += 1;
    }
    if steps >= 2 || steps == 1 && strong_step {
        hits.push(rules::LFI_TRAVERSAL);
    } else if steps == 1 {
        hits.push(rules::LFI_TRAVERSAL_SINGLE);
    }
}

/// Flags a request path that names a hidden file or folder (a segment starting with a dot),
/// such as `/.git/config` or `/.env`. `/.well-known/` is the one standard exception.
fn detect_restricted_path(path: &str, hits: &mut Vec<Rule>) {
    let restricted = path.split(['/', '\\']).any(|segment| {
        segment.len() > 1
            && segment.starts_with('.')
            && !segment.starts_with("..")
            && segment != ".well-known"
    });
    if restricted {
        hits.push(rules::LFI_RESTRICTED_FILE);
    }
}

/// Returns whether an uploaded file's name has a PHP script extension anywhere, as in `shell.php.jpg`,
/// which servers that look at the first extension run as PHP.
fn is_php_file_name(name: &str) -> bool {
    name.split('.').skip(1).any(|extension| {
        matches!(
            extension.trim(),
            "php" | "php3" | "php4" | "php5" | "php7" | "php8" | "phtml" | "phar" | "pht" | "phps"
        )
    })
}

/// A gadget marker found inside a Base64 run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base64Gadget {
    /// A Java gadget class name.
    Java,
    /// The function marker of the node-serialize package, `_$$ND_FUNC$$_`.
    NodeFunction,
}

/// Markers of serialized Node.js functions, lowercase.
const NODE_FUNCTION_MARKERS: &[&[u8]] = &[b"_$$nd_func$$_", b"_func$$_"];

/// Finds a Base64 run in `text` that decodes, at any of the four alignments, to a gadget
/// name. Payload generators embed serialized objects in Base64, and the names inside them
/// survive the encoding only up to the 3-byte alignment. A run cut out of a longer one starts
/// mid-character, so a name whose first one or two letters were lost counts at the start of
/// the run.
fn base64_gadget(text: &str) -> Option<Base64Gadget> {
    // No run long enough to decode fits in a shorter text.
    if text.len() < MIN_BASE64_RUN {
        return None;
    }
    let mut decoded = Vec::new();
    for run in base64_runs(text.as_bytes()).take(MAX_BASE64_RUNS) {
        for shift in 0..4 {
            let Some(start) = run.get(shift..) else {
                break;
            };
            // Most runs are ids and words whose decoded bytes contain no marker, which this
            // check finds without storing the decoded bytes.
            if !decodes_to_possible_marker(start) {
                continue;
            }
            decode_base64_lenient(start, &mut decoded);
            if let Some(gadget) = gadget_in(&decoded) {
                return Some(gadget);
            }
        }
    }
    None
}

/// Value of a byte that is not a Base64 character in [`BASE64_VALUES`].
const NOT_BASE64: u8 = 0xFF;

/// The 6-bit value of each standard or URL-safe Base64 character, by byte value, and
/// [`NOT_BASE64`] for every other byte.
static BASE64_VALUES: [u8; 256] = {
    let mut table = [NOT_BASE64; 256];
    let mut index = 0;
    while index < 26 {
        table[b'A' as usize + index] = index as u8;
        table[b'a' as usize + index] = index as u8 + 26;
        index += 1;
    }
    index = 0;
    while index < 10 {
        table[b'0' as usize + index] = index as u8 + 52;
        index += 1;
    }
    table[b'+' as usize] = 62;
    table[b'-' as usize] = 62;
    table[b'/' as usize] = 63;
    table[b'_' as usize] = 63;
    table
};

/// Returns the runs of Base64 characters in `bytes` that are at least [`MIN_BASE64_RUN`] long.
/// Base64 characters are ASCII, and every byte of a non-ASCII character ends a run, so
/// splitting the bytes gives the runs that splitting the characters gives.
fn base64_runs(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|byte| BASE64_VALUES[usize::from(*byte)] == NOT_BASE64)
        .filter(|run| run.len() >= MIN_BASE64_RUN)
}

/// Returns what [`may_contain_marker`] returns for the bytes that [`decode_base64_lenient`]
/// decodes from `run`, without storing them.
fn decodes_to_possible_marker(run: &[u8]) -> bool {
    let mut scan = MarkerScan::default();
    decode_base64_each(run, |byte| scan.feed(byte))
}

/// Finds a gadget marker in decoded bytes, ignoring ASCII case. A Node.js function marker wins
/// over a Java name in the same bytes.
fn gadget_in(decoded: &[u8]) -> Option<Base64Gadget> {
    if !may_contain_marker(decoded) {
        return None;
    }
    let lowered = decoded.to_ascii_lowercase();
    if NODE_FUNCTION_MARKERS.iter().any(|marker| contains_bytes(&lowered, marker)) {
        return Some(Base64Gadget::NodeFunction);
    }
    let java = GADGET_NAMES.iter().any(|name| {
        // A run cut out of a longer one may have lost the name's first one or two letters.
        let lost = if name.len() >= 7 { 2 } else { 1 };
        let head = &lowered[..lowered.len().min(name.len() + 1)];
        contains_bytes(&lowered, name) || contains_bytes(head, &name[lost..])
    });
    java.then_some(Base64Gadget::Java)
}

/// Returns whether `decoded` could contain a marker. Bytes decoded from ordinary words and ids
/// almost never pass, which saves the search.
fn may_contain_marker(decoded: &[u8]) -> bool {
    let mut scan = MarkerScan::default();
    decoded.iter().any(|byte| scan.feed(*byte))
}

/// A check of decoded bytes, fed one at a time, for whether they could contain a marker. Every
/// Node.js marker contains `$`, and every Java name, even with two letters lost, is a run of at
/// least five letters and dots.
#[derive(Default)]
struct MarkerScan {
    /// Length of the run of letters and dots that ends the bytes read so far.
    letters: usize,
}

impl MarkerScan {
    /// Reads one byte and returns whether the bytes so far could contain a marker.
    fn feed(&mut self, byte: u8) -> bool {
        if byte == b'$' {
            return true;
        }
        if byte.is_ascii_alphabetic() || byte == b'.' {
            self.letters += 1;
            self.letters >= 5
        } else {
            self.letters = 0;
            false
        }
    }
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(first) = needle.first() else {
        return true;
    };
    // Comparing the first byte before the whole window skips most calls to `memcmp`.
    haystack
        .windows(needle.len())
        .any(|window| window[0] == *first && window == needle)
}

/// Decodes standard or URL-safe Base64 into `output`, replacing its contents and ignoring a
/// trailing partial group.
fn decode_base64_lenient(text: &[u8], output: &mut Vec<u8>) {
    output.clear();
    decode_base64_each(text, |byte| {
        output.push(byte);
        false
    });
}

/// Decodes standard or URL-safe Base64 up to the first byte that is not a Base64 character and
/// passes each decoded byte to `stop`, ignoring a trailing partial group. Returns `true` as
/// soon as `stop` does.
fn decode_base64_each(text: &[u8], mut stop: impl FnMut(u8) -> bool) -> bool {
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &character in text {
        let value = BASE64_VALUES[usize::from(character)];
        if value == NOT_BASE64 {
            break;
        }
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = (buffer >> bits) as u8;
            buffer &= (1 << bits) - 1;
            if stop(byte) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        #[test]
        fn streamed_marker_check_matches_decoded(
            run in "[A-Za-z0-9+/_-]{0,64}|(cnVudGltZQ|XyQkTkRf|amF2YS5sYW5n|[A-Za-z0-9]{0,6}){1,8}",
        ) {
            let mut decoded = Vec::new();
            decode_base64_lenient(run.as_bytes(), &mut decoded);
            proptest::prop_assert_eq!(decodes_to_possible_marker(run.as_bytes()), may_contain_marker(&decoded), "run {:?}", run);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        #[test]
        fn cased_signature_check_keeps_matches(
            pieces in proptest::collection::vec(
                "rO0AB|rO0|AAEAAAD/////|AAEAAAD/|H4sIAAAAAAAA|[A-Za-z0-9+/]{0,6}|\\PC{0,2}|\u{130}|\u{212a}",
                0..8,
            ),
        ) {
            let cased = pieces.concat();
            let folded = super::super::normalise::lowercase(&cased);
            let matches = CASED_SIGNATURES.as_ref().is_some_and(|regex| regex.is_match(&cased));
            if matches {
                proptest::prop_assert!(may_match_cased_signature(&folded, &ByteSet::of(&folded)), "cased {:?}", cased);
            }
        }
    }

    #[test]
    fn cased_signature_check_passes_signatures() {
        for cased in ["xrO0ABx", "AAEAAAD/////", "H4sIAAAAAAAAxyrO0"] {
            let folded = cased.to_lowercase();
            assert!(CASED_SIGNATURES.as_ref().is_some_and(|regex| regex.is_match(cased)), "cased {cased:?}");
            assert!(may_match_cased_signature(&folded, &ByteSet::of(&folded)), "cased {cased:?}");
        }
        assert!(!may_match_cased_signature("order 600", &ByteSet::of("order 600")));
    }

    #[test]
    fn base64_table_matches_alphabets() {
        let standard = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let url_safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for byte in 0..=u8::MAX {
            let expected = standard
                .iter()
                .position(|character| *character == byte)
                .or_else(|| url_safe.iter().position(|character| *character == byte))
                .map_or(NOT_BASE64, |value| value as u8);
            assert_eq!(BASE64_VALUES[usize::from(byte)], expected, "byte {byte:#x}");
        }
    }
}
