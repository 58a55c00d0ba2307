//! Signature patterns for PHP code injection: open tags, superglobals, function calls,
//! variable functions and php.ini directives.
//!
//! Many PHP function names are also English words (`system`, `file`, `include`, `range`), and
//! prose names functions too ("substr (substring)"), so a name alone never matches. A call
//! needs its bracket right after the name or after a gap that prose does not write: a tab, a
//! line break, two spaces or a comment, the obfuscations that CRS rule 933160 tests. After one
//! space, the argument list must read as code: empty, or opening with a quote or a variable.

use super::{Rule, rules};

/// Whitespace or one PHP comment, the filler PHP allows between a name and its bracket.
macro_rules! gap {
    () => {
        r"(?:\s|/\*(?s:.)*?\*/|//[^\n]*\n|#[^\n]*\n)"
    };
}

/// A gap before a call's bracket that prose does not write: a comment, a tab, a line break
/// or two spaces, with any filler around it, then the bracket.
macro_rules! obfuscated_bracket {
    () => {
        concat!(gap!(), r"*(?:/\*(?s:.)*?\*/|//[^\n]*\n|#[^\n]*\n|[\t\n\r]|\x20\x20)", gap!(), r"*\(")
    };
}

/// One space, then a bracket that ends the value or opens an argument list that reads as
/// code: empty, or starting with a quote, a variable or `@`.
macro_rules! spaced_call {
    () => {
        r"\x20\((?:$|\s*(?:\)|['\x22$@]))"
    };
}

/// A bracket right after a name, unless it contains a manual section such as `chmod(2)`.
macro_rules! direct_call {
    () => {
        r"\((?:$|\D|\d(?:$|\d|[^)a-z0-9]))"
    };
}

/// The start of a function name that is not a method, as in `fs.chmod(`, which JavaScript
/// and Python write. A dot after a bracket or a quote is PHP's concatenation and counts.
/// NOTE: a concatenation right after a variable or a number, as in `$a.system('id')`, reads
/// as a method call and is missed.
macro_rules! function_start {
    () => {
        r"(?:^|[^\w.]|[^\w]\.)"
    };
}

/// Table rows as the signature module takes them: pattern, rule and anchors.
/// Anchors of the function call patterns: a literal that each function name of the pattern
/// contains, so that only values naming such a function run the pattern. A bracket alone
/// would send every value with brackets, such as most prose, through every pattern.
const CODE_EXECUTION_FUNCTIONS: &[&str] = &[
    "array_map", "assert", "base64_decode", "call_user_func", "create_function", "eval", "file_get_contents",
    "file_put_contents", "gzinflate", "gzuncompress", "highlight_file", "move_uploaded_file", "passthru", "pcntl_exec",
    "phpinfo", "popen", "posix_", "preg_replace", "proc_open", "shell_exec", "show_source",
    "str_rot13", "unserialize",
];
const FILE_AND_STRING_FUNCTIONS: &[&str] = &[
    "_handler", "addslashes", "array_filter", "array_reduce", "array_walk", "assert_options", "base64_encode",
    "bin2hex", "chdir", "checkdate", "chgrp", "chmod", "chown", "chr",
    "chroot", "curl_exec", "curl_init", "debug_zval_dump", "dns_get_record", "fgets", "file",
    "file_exists", "floatval", "fopen", "forward_static_call", "fpassthru", "fprintf", "fputs",
    "fread", "fsockopen", "func_get_args", "function_exists", "fwrite", "get_current_user", "get_defined_",
    "get_include_path", "getcwd", "getenv", "gethostbyname", "getmypid", "getmyuid", "gettype",
    "hex2bin", "html_entity_decode", "htmlspecialchars", "include_once", "ini_", "intval", "is_",
    "iterator_apply", "lchown", "mkdir", "ob_start", "opendir", "ord", "parse_str",
    "pfsockopen", "php_uname", "phpversion", "print_r", "printf", "putenv", "readdir",
    "readfile", "readlink", "register_", "require_once", "rmdir", "scandir", "set_include_path",
    "settype", "simplexml_load_", "socket_create", "sort", "spl_autoload_register", "str_", "stream_socket_client",
    "strip_tags", "stripslashes", "strrev", "strval", "substr", "symlink", "tempnam",
    "tmpfile", "unlink", "unpack", "urldecode", "var_dump", "var_export",
];
const WORD_FUNCTIONS: &[&str] = &[
    "crypt", "exec", "extract", "file", "glob", "include", "pack",
    "pi", "range", "require", "serialize", "system", "touch",
];
const EXTENSION_FUNCTION_PREFIXES: &[&str] = &[
    "pg_", "ldap_", "odbc_", "sodium_", "tidy_", "zend_", "mysqli_", "oci_", "sqlsrv_",
    "pcntl_", "proc_", "stream_", "socket_", "curl_", "ftp_", "openssl_", "mcrypt_", "imap_",
    "mb_", "gmp_", "spl_", "apc", "opcache_", "session_", "preg_", "readline_", "xmlrpc_",
    "libxml_", "dba_", "shmop_", "sem_", "shm_", "msg_", "exif_", "finfo_", "iconv_",
    "grapheme_", "zip_", "zlib_", "ssh2_", "posix_", "array_", "date_",
];
const COMMENTED_CALL_FUNCTIONS: &[&str] = &[
    "system", "exec", "passthru", "popen", "proc_open", "eval", "assert", "include", "require",
];
const QUOTED_CALL_FUNCTIONS: &[&str] = &[
    "system", "exec", "passthru", "popen", "proc_open", "eval", "assert", "phpinfo",
];

pub(super) type SignatureRow = (&'static str, Rule, &'static [&'static str]);

/// Lists the PHP signature patterns in the form of the signature table.
pub(super) fn signature_rows() -> Vec<SignatureRow> {
    vec![
        (r"<\?(?:php\b|=)", rules::PHP_OPEN_TAG, &["<?"]),
        (
            r"\$_(?:get|post|request|cookie|server|env|files|session|globals)\b",
            rules::PHP_SUPERGLOBAL, &["$_"],
        ),
        // A superglobal name split by whitespace, then its index, which slips past a match on
        // the whole name.
        (
            concat!(
                r"\$_\s*(?:g\s*e\s*t|p\s*o\s*s\s*t|r\s*e\s*q\s*u\s*e\s*s\s*t|c\s*o\s*o\s*k\s*i\s*e|",
                r"s\s*e\s*r\s*v\s*e\s*r|e\s*n\s*v|f\s*i\s*l\s*e\s*s|s\s*e\s*s\s*s\s*i\s*o\s*n)\s*\["
            ),
            rules::PHP_SUPERGLOBAL, &["$_"],
        ),
        (
            concat!(
                function_start!(),
                r"(?:passthru|shell_exec|proc_open|popen|pcntl_exec|phpinfo|base64_decode|gzinflate|",
                r"gzuncompress|str_rot13|file_get_contents|file_put_contents|create_function|",
                r"call_user_func(?:_array)?|highlight_file|show_source|unserialize|move_uploaded_file|",
                r"preg_replace|assert|eval|array_map|posix_\w+)",
                r"(?:", direct_call!(), "|", obfuscated_bracket!(), "|", spaced_call!(), ")",
            ),
            rules::PHP_FUNCTION, CODE_EXECUTION_FUNCTIONS,
        ),
        // A comment between a function name and its bracket only hides the call.
        (
            r"\b(?:system|exec|passthru|shell_exec|popen|proc_open|eval|assert|include|require)\s*(?:/\*.*?\*/|//[^\n]*\n|#[^\n]*\n)\s*(?:/\*.*?\*/\s*)*\(",
            rules::PHP_FUNCTION, COMMENTED_CALL_FUNCTIONS,
        ),
        (
            r"\(\s*['\x22`]\s*(?:system|exec|passthru|shell_exec|popen|proc_open|eval|assert|phpinfo)\s*['\x22`]\s*\)\s*\(",
            rules::PHP_FUNCTION, QUOTED_CALL_FUNCTIONS,
        ),
        // A quoted function name called as a string, as in `return "system"(x)`.
        (
            r"['\x22`]\s*(?:system|exec|passthru|shell_exec|popen|proc_open|eval|assert|phpinfo)\s*['\x22`]\(",
            rules::PHP_FUNCTION, QUOTED_CALL_FUNCTIONS,
        ),
        (
            concat!(
                function_start!(),
                r"(?:include_once|require_once|fopen|fwrite|fputs|fread|fgets|fpassthru|readfile|",
                r"file_exists|file(?:group|owner|perms|inode|size|type|[amc]time)|is_(?:file|dir|link|readable|writ(?:e?able)|executable)|",
                r"tempnam|tmpfile|unlink|rmdir|mkdir|chmod|chown|chgrp|lchown|readlink|symlink|chroot|chdir|getcwd|scandir|opendir|readdir|",
                r"substr|strrev|str_(?:replace|repeat|pad|split|ireplace)|strip_tags|stripslashes|addslashes|",
                r"htmlspecialchars|html_entity_decode|(?:raw)?urldecode|base64_encode|bin2hex|hex2bin|chr|ord|unpack|",
                r"v?s?printf|fprintf|print_r|var_dump|var_export|debug_zval_dump|intval|floatval|strval|settype|gettype|",
                r"getenv|putenv|ini_(?:set|get|get_all|restore|alter)|set_include_path|get_include_path|phpversion|php_uname|",
                r"getmypid|getmyuid|get_current_user|fsockopen|pfsockopen|stream_socket_client|socket_create|curl_exec|curl_init|",
                r"gethostbynamel?|dns_get_record|parse_str|register_(?:shutdown|tick)_function|set_(?:error|exception)_handler|",
                r"spl_autoload_register|ob_start|u[ak]?sort|array_walk|array_filter|array_reduce|iterator_apply|",
                r"forward_static_call(?:_array)?|func_get_args|get_defined_(?:vars|functions|constants)|function_exists|",
                r"simplexml_load_(?:string|file)|assert_options|checkdate)",
                r"(?:", direct_call!(), "|", obfuscated_bracket!(), "|", spaced_call!(), ")",
            ),
            rules::PHP_FUNCTION_CALL, FILE_AND_STRING_FUNCTIONS,
        ),
        // Function names that are also English words, where a bracket right after the name
        // must not hold a plural ending, as `file(s)` does.
        (
            concat!(
                function_start!(),
                r"(?:system|exec|file|include|require|serialize|touch|range|crypt|pi|pack|extract|glob)",
                r"(?:\((?:$|[^se\d]|s(?:$|[^)])|e(?:$|[^s])|es(?:$|[^)])|\d(?:$|\d|[^)a-z0-9]))|",
                obfuscated_bracket!(), "|", spaced_call!(), ")",
            ),
            rules::PHP_FUNCTION_CALL, WORD_FUNCTIONS,
        ),
        // A function of one of PHP's bundled extensions, named by the extension's prefix.
        // NOTE: any name with such a prefix counts, including names PHP does not define, such
        // as `sodium_add_to_recipe(foo)`. A full list of PHP's function names would avoid that.
        (
            concat!(
                function_start!(),
                r"(?:(?:pg|ldap|odbc|sodium|tidy|zend|mysqli|oci|sqlsrv|pcntl|proc|stream|socket|curl|ftp|",
                r"openssl|mcrypt|imap|mb|gmp|spl|apcu?|opcache|session|preg|readline|xmlrpc|libxml|dba|shmop|",
                r"sem|shm|msg|exif|finfo|iconv|grapheme|zip|zlib|ssh2|posix)_[a-z0-9_]+",
                r"|array_(?:diff|intersect|udiff|uintersect|key|merge|combine|fill|flip|search|slice|splice|",
                r"walk|reduce|filter|map|keys|values|column|chunk|pad|rand|product|replace|reverse|sum|unique)\w*",
                r"|date_(?:add|sub|create|diff|parse|modify|format|interval|default_timezone|sun|time|timestamp)\w*)",
                r"(?:", direct_call!(), "|", obfuscated_bracket!(), "|", spaced_call!(), ")",
            ),
            rules::PHP_EXTENSION_CALL, EXTENSION_FUNCTION_PREFIXES,
        ),
        // A variable function: a call through `$name`, `$$name`, `${expr}` or an array element
        // or brace expression of one, with comments or whitespace between the parts.
        (
            concat!(
                r"\$+\s*(?:\{[^}]+\}|[a-z_\x{80}-\x{10FFFF}][a-z0-9_\x{80}-\x{10FFFF}]*)",
                r"(?:", gap!(), r"*(?:\[[^\]]+\]+|\{[^}]+\}))*",
                r"(?:\(|", obfuscated_bracket!(), "|", spaced_call!(), r"|\x20\(\d+\s*\))",
            ),
            rules::PHP_VARIABLE_FUNCTION, &["$"],
        ),
        (
            concat!(
                r"\b(?:allow_url_include|allow_url_fopen|auto_prepend_file|auto_append_file|",
                r"disable_functions|open_basedir|register_globals|suhosin\.\w+)\b"
            ),
            rules::PHP_CONFIG_DIRECTIVE, &["allow_url_", "auto_prepend_file", "auto_append_file", "disable_functions", "open_basedir", "register_globals", "suhosin."],
        ),
        // A php.ini directive set to a value, the form of a php-cgi `-d` argument or a
        // `.user.ini` line. Directives in a dotted section or with an underscore may follow a
        // quote, a space or a semicolon, but plain words only count at the start of the value.
        // NOTE: a value that starts with `engine=` or `extension=` for another reason, such
        // as a nested query string, is flagged too.
        (
            concat!(
                r"(?:^|['\x22\s;])(?:(?:opcache|mbstring|session|pcre|phar|xdebug|apc|apcu|mysqli|mysqlnd|",
                r"pdo_mysql|mail|cgi|fastcgi|zend|assert|iconv|intl|ldap|odbc|pgsql|soap|sqlite3|curl|openssl|",
                r"filter|highlight|user_ini|zlib)\.[a-z_.]+|",
                r"memory_limit|max_execution_time|max_input_(?:time|vars|nesting_level)|post_max_size|",
                r"upload_max_filesize|upload_tmp_dir|file_uploads|include_path|extension_dir|zend_extension|",
                r"serialize_precision|unserialize_(?:max_depth|callback_func)|display_(?:startup_)?errors|",
                r"error_(?:log|reporting)|log_errors|html_errors|smtp_port|sendmail_(?:path|from)|short_open_tag|",
                r"expose_php|enable_dl|doc_root|user_dir|default_charset|output_(?:buffering|handler)|",
                r"variables_order|request_order|magic_quotes_\w+|safe_mode\w*|disable_classes)\s*=",
                r"|^\s*(?:engine|extension|precision|smtp|sendmail|browscap)\s*=",
            ),
            rules::PHP_CONFIG_DIRECTIVE, &["="],
        ),
    ]
}
