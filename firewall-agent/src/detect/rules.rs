//! The catalogue of detection rules: ids, numbers, families and severities.
//!
//! The id (such as `sqli-union`) is what config exclusions, detection-only lists, security
//! events and the audit log name. The number is a short unique form of it. Neither is ever
//! reused for another rule.
//!
//! A rule's level is the lowest `[threat] paranoia_level` at which it runs. Level 1 is the
//! default. Rules of higher levels catch more probes and flag more ordinary values.

use super::{Family, Rule, Severity};

/// A closed value followed by AND/OR and a comparison, call or subquery.
pub const SQLI_BOOLEAN: Rule = Rule {
    id: "sqli-boolean",
    number: 1101,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// UNION SELECT, or UNION right after a closed value.
pub const SQLI_UNION: Rule = Rule {
    id: "sqli-union",
    number: 1102,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A statement separator followed by a new statement.
pub const SQLI_STACKED_QUERY: Rule = Rule {
    id: "sqli-stacked-query",
    number: 1103,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A time-based or file-reading function such as SLEEP or LOAD_FILE, or WAITFOR DELAY.
pub const SQLI_FUNCTION: Rule = Rule {
    id: "sqli-function",
    number: 1104,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A closed string or number followed by a comment that cuts off the query.
pub const SQLI_COMMENT_BREAK: Rule = Rule {
    id: "sqli-comment-break",
    number: 1105,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A MySQL executable comment `/*!` or an optimizer hint `/*+name`.
pub const SQLI_EXECUTABLE_COMMENT: Rule = Rule {
    id: "sqli-executable-comment",
    number: 1106,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A statement with its clauses, such as `SELECT x FROM` or `DROP TABLE x`.
pub const SQLI_STATEMENT: Rule = Rule {
    id: "sqli-statement",
    number: 1109,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A database's system catalogue, such as `information_schema` or `sqlite_master`.
pub const SQLI_SYSTEM_TABLE: Rule = Rule {
    id: "sqli-system-table",
    number: 1110,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A `/* */` comment in place of a space next to a SQL keyword, as in `drop/*x*/table`, or
/// splitting one, as in `sel/**/ect`.
pub const SQLI_COMMENT_OBFUSCATION: Rule = Rule {
    id: "sqli-comment-obfuscation",
    number: 1111,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A sample database or an `information_schema` column that probes name, such as `northwind`
/// or `schema_name`. Runs from paranoia level 2: an API about databases may carry these words.
pub const SQLI_DATABASE_NAME: Rule = Rule {
    id: "sqli-database-name",
    number: 1112,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 2,
};

/// A SQL string or binary type name, such as `varchar` or `nvarchar`, as casts in injected
/// queries carry it. Runs from paranoia level 2.
pub const SQLI_TYPE_NAME: Rule = Rule {
    id: "sqli-type-name",
    number: 1113,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 2,
};

/// Many characters that SQL and shells treat as operators or quotes in one parameter or cookie,
/// such as `(((((())))))` or `!@#$%^&*()`. Runs from paranoia level 2 with a limit of 12, which
/// later levels lower (see [`super::strict`]). In a URL, its own syntax does not count.
pub const SQLI_CHARACTER_ANOMALY: Rule = Rule {
    id: "sqli-character-anomaly",
    number: 1114,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 2,
};

/// A value that ends with AND, OR or XOR and a space, the first half of a condition split over
/// two parameters, such as `/3 or `. Runs from paranoia level 3: a search box that sends each
/// keystroke sends such values too.
pub const SQLI_TRAILING_OPERATOR: Rule = Rule {
    id: "sqli-trailing-operator",
    number: 1115,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 3,
};

/// A value that starts or ends with a single quote or a backtick, as probes for an unescaped
/// string send, such as `'bla'` or `admin '`. Runs from paranoia level 3: names and prose can
/// end with an apostrophe.
pub const SQLI_EDGE_QUOTE: Rule = Rule {
    id: "sqli-edge-quote",
    number: 1116,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 3,
};

/// A PHP script file name in an upload.
pub const PHP_FILE_UPLOAD: Rule = Rule {
    id: "php-file-upload",
    number: 1706,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A bracketed or chained SELECT.
pub const SQLI_SUBQUERY: Rule = Rule {
    id: "sqli-subquery",
    number: 1107,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A closed string followed by an operator and a value, call or ORDER BY.
pub const SQLI_STRING_BREAK: Rule = Rule {
    id: "sqli-string-break",
    number: 1108,
    family: Family::Sqli,
    severity: Severity::Critical,
    level: 1,
};

/// A tag that runs script or loads a document, such as `<script>` or `<iframe>`.
pub const XSS_DANGEROUS_TAG: Rule = Rule {
    id: "xss-dangerous-tag",
    number: 1201,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// An event handler attribute such as `onerror=`.
pub const XSS_EVENT_HANDLER: Rule = Rule {
    id: "xss-event-handler",
    number: 1202,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// A `javascript:`, `vbscript:` or HTML `data:` URL.
pub const XSS_SCRIPT_URL: Rule = Rule {
    id: "xss-script-url",
    number: 1203,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// Script inside CSS: `expression(`, `-moz-binding`, `behavior:`.
pub const XSS_STYLE_SCRIPT: Rule = Rule {
    id: "xss-style-script",
    number: 1204,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// A call of `alert`, `eval` and the like, or a DOM property scripts steal.
pub const XSS_SCRIPT_SINK: Rule = Rule {
    id: "xss-script-sink",
    number: 1205,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// XML that makes a parser load markup from elsewhere: a namespace declaration or schema
/// location in a tag, an XInclude, or an entity declaration.
pub const XSS_XML_INJECTION: Rule = Rule {
    id: "xss-xml-injection",
    number: 1206,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// Markup written with bytes that read as `<`, `>` and `"` once their high bit is dropped,
/// such as `\xbcscript\xbe`, which a US-ASCII decoder turns into `<script>`.
pub const XSS_SEVEN_BIT_MARKUP: Rule = Rule {
    id: "xss-seven-bit-markup",
    number: 1207,
    family: Family::Xss,
    severity: Severity::Critical,
    level: 1,
};

/// Two or more `../` steps.
pub const LFI_TRAVERSAL: Rule = Rule {
    id: "lfi-traversal",
    number: 1301,
    family: Family::Lfi,
    severity: Severity::Critical,
    level: 1,
};

/// One `../` step.
pub const LFI_TRAVERSAL_SINGLE: Rule = Rule {
    id: "lfi-traversal-single",
    number: 1302,
    family: Family::Lfi,
    severity: Severity::Notice,
    level: 1,
};

/// The path of a sensitive system or server file, such as `/etc/passwd`.
pub const LFI_SENSITIVE_FILE: Rule = Rule {
    id: "lfi-sensitive-file",
    number: 1303,
    family: Family::Lfi,
    severity: Severity::Critical,
    level: 1,
};

/// A request path naming a hidden file or folder, such as `/.git/`.
pub const LFI_RESTRICTED_FILE: Rule = Rule {
    id: "lfi-restricted-file",
    number: 1304,
    family: Family::Lfi,
    severity: Severity::Critical,
    level: 1,
};

/// A stream wrapper such as `php://` or `phar://`.
pub const LFI_STREAM_WRAPPER: Rule = Rule {
    id: "lfi-stream-wrapper",
    number: 1305,
    family: Family::Lfi,
    severity: Severity::Critical,
    level: 1,
};

/// A `file:` URL.
pub const LFI_FILE_URL: Rule = Rule {
    id: "lfi-file-url",
    number: 1306,
    family: Family::Lfi,
    severity: Severity::Critical,
    level: 1,
};

/// A URL whose host is an IP address.
pub const RFI_IP_URL: Rule = Rule {
    id: "rfi-ip-url",
    number: 1401,
    family: Family::Rfi,
    severity: Severity::Warning,
    level: 1,
};

/// `unix:` and a socket path followed by `|` and a URL, the request form that made Apache's
/// mod_proxy forward to any server (CVE-2021-40438).
pub const RFI_UNIX_SOCKET_URL: Rule = Rule {
    id: "rfi-unix-socket-url",
    number: 1405,
    family: Family::Rfi,
    severity: Severity::Critical,
    level: 1,
};

/// A value that is a `data:` URL of text, such as `data:text/plain;base64,PD9waHA...`, which
/// PHP's `include` runs as code. Runs from paranoia level 2: some APIs take text files as
/// data URLs. Images and other media types are left alone.
pub const RFI_DATA_URL: Rule = Rule {
    id: "rfi-data-url",
    number: 1406,
    family: Family::Rfi,
    severity: Severity::Critical,
    level: 2,
};

/// The address of a cloud metadata service.
pub const RFI_METADATA_ADDRESS: Rule = Rule {
    id: "rfi-metadata-address",
    number: 1402,
    family: Family::Rfi,
    severity: Severity::Critical,
    level: 1,
};

/// A `gopher:`, `dict:`, `ldap:` or `tftp:` URL.
pub const RFI_SCHEME: Rule = Rule {
    id: "rfi-scheme",
    number: 1403,
    family: Family::Rfi,
    severity: Severity::Critical,
    level: 1,
};

/// A URL ending in `?`, which cuts off a path the application appends.
pub const RFI_TRAILING_QUESTION_MARK: Rule = Rule {
    id: "rfi-trailing-question-mark",
    number: 1404,
    family: Family::Rfi,
    severity: Severity::Critical,
    level: 1,
};

/// A Unix command after a shell separator, or a globbed command path.
pub const RCE_UNIX_COMMAND: Rule = Rule {
    id: "rce-unix-command",
    number: 1501,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// A Windows command after a shell separator.
pub const RCE_WINDOWS_COMMAND: Rule = Rule {
    id: "rce-windows-command",
    number: 1502,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// Shell syntax that only injections use: `${IFS}`, `/dev/tcp/`.
pub const RCE_SHELL_SYNTAX: Rule = Rule {
    id: "rce-shell-syntax",
    number: 1503,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// A Shellshock function definition `() {`.
pub const RCE_SHELLSHOCK: Rule = Rule {
    id: "rce-shellshock",
    number: 1504,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// Shell brace expansion such as `{cat,/etc/passwd}`.
pub const RCE_BRACE_EXPANSION: Rule = Rule {
    id: "rce-brace-expansion",
    number: 1505,
    family: Family::Rce,
    severity: Severity::Warning,
    level: 1,
};

/// A PowerShell cmdlet or option that downloads or runs code.
pub const RCE_POWERSHELL: Rule = Rule {
    id: "rce-powershell",
    number: 1506,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// Windows shell syntax: `cmd /c`, `%COMSPEC%`, `for /f`.
pub const RCE_WINDOWS_SHELL: Rule = Rule {
    id: "rce-windows-shell",
    number: 1507,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// A mail protocol command (SMTP or IMAP) after a line break, which a mail library passes
/// on to its server.
pub const RCE_MAIL_COMMAND: Rule = Rule {
    id: "rce-mail-command",
    number: 1508,
    family: Family::Rce,
    severity: Severity::Critical,
    level: 1,
};

/// A template expression with an operator, call or attribute access.
pub const SSTI_EXPRESSION: Rule = Rule {
    id: "ssti-expression",
    number: 1601,
    family: Family::Ssti,
    severity: Severity::Critical,
    level: 1,
};

/// A template statement such as `{% if %}` or `{% import %}`.
pub const SSTI_STATEMENT: Rule = Rule {
    id: "ssti-statement",
    number: 1602,
    family: Family::Ssti,
    severity: Severity::Critical,
    level: 1,
};

/// `__proto__` or `constructor.prototype`.
pub const SSTI_PROTOTYPE_POLLUTION: Rule = Rule {
    id: "ssti-prototype-pollution",
    number: 1603,
    family: Family::Ssti,
    severity: Severity::Critical,
    level: 1,
};

/// Node.js code: `require('child_process')`, `process.mainModule`, ...
pub const SSTI_NODEJS_INJECTION: Rule = Rule {
    id: "ssti-nodejs-injection",
    number: 1604,
    family: Family::Ssti,
    severity: Severity::Critical,
    level: 1,
};

/// A Django-style ORM lookup key, such as `user__password__startswith`, that walks a relation
/// or filters on a secret column. Clients that may choose such keys can read a column one
/// character at a time.
pub const SSTI_ORM_LOOKUP: Rule = Rule {
    id: "ssti-orm-lookup",
    number: 1605,
    family: Family::Ssti,
    severity: Severity::Critical,
    level: 1,
};

/// A PHP open tag `<?php` or `<?=`.
pub const PHP_OPEN_TAG: Rule = Rule {
    id: "php-open-tag",
    number: 1701,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A PHP superglobal such as `$_GET`.
pub const PHP_SUPERGLOBAL: Rule = Rule {
    id: "php-superglobal",
    number: 1702,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A call of a PHP function that runs code or reads files.
pub const PHP_FUNCTION: Rule = Rule {
    id: "php-function",
    number: 1703,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A call of a PHP function that reads or writes files, decodes or prints data, or is also a
/// common word, such as `fopen (`, `substr/**/(` or `system(`.
pub const PHP_FUNCTION_CALL: Rule = Rule {
    id: "php-function-call",
    number: 1704,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A PHP configuration directive such as `allow_url_include`.
pub const PHP_CONFIG_DIRECTIVE: Rule = Rule {
    id: "php-config-directive",
    number: 1705,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A call of a function of a bundled PHP extension, named by its prefix, such as
/// `pg_query(` or `sodium_crypto_box(`.
pub const PHP_EXTENSION_CALL: Rule = Rule {
    id: "php-extension-call",
    number: 1707,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// A PHP variable function: a call through a variable, such as `$f(`, `${'a'}(` or
/// `$__['o'](`.
pub const PHP_VARIABLE_FUNCTION: Rule = Rule {
    id: "php-variable-function",
    number: 1708,
    family: Family::Php,
    severity: Severity::Critical,
    level: 1,
};

/// Java class names and expression-language payloads: `java.lang.Runtime`, `${jndi:`, OGNL.
pub const JAVA_CODE_INJECTION: Rule = Rule {
    id: "java-code-injection",
    number: 1801,
    family: Family::Java,
    severity: Severity::Critical,
    level: 1,
};

/// A Base64 run that decodes to a Java gadget class name.
pub const JAVA_BASE64_GADGET: Rule = Rule {
    id: "java-base64-gadget",
    number: 1802,
    family: Family::Java,
    severity: Severity::Critical,
    level: 1,
};

/// A Java serialization stream header, raw or in Base64.
pub const DESERIALIZATION_JAVA: Rule = Rule {
    id: "deserialization-java",
    number: 1901,
    family: Family::Deserialization,
    severity: Severity::Critical,
    level: 1,
};

/// A PHP serialized object.
pub const DESERIALIZATION_PHP: Rule = Rule {
    id: "deserialization-php",
    number: 1902,
    family: Family::Deserialization,
    severity: Severity::Critical,
    level: 1,
};

/// A .NET or Java JSON type hint naming a dangerous class.
pub const DESERIALIZATION_DOTNET_JSON: Rule = Rule {
    id: "deserialization-dotnet-json",
    number: 1903,
    family: Family::Deserialization,
    severity: Severity::Critical,
    level: 1,
};

/// A YAML tag or Python pickle opcode that builds objects.
pub const DESERIALIZATION_YAML_PICKLE: Rule = Rule {
    id: "deserialization-yaml-pickle",
    number: 1904,
    family: Family::Deserialization,
    severity: Severity::Critical,
    level: 1,
};

/// An overlong UTF-8 sequence.
pub const PROTOCOL_OVERLONG_UTF8: Rule = Rule {
    id: "protocol-overlong-utf8",
    number: 2001,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// A NUL byte.
pub const PROTOCOL_NUL_BYTE: Rule = Rule {
    id: "protocol-nul-byte",
    number: 2002,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// A control byte other than tab, line feed and carriage return.
pub const PROTOCOL_CONTROL_BYTE: Rule = Rule {
    id: "protocol-control-byte",
    number: 2003,
    family: Family::Protocol,
    severity: Severity::Notice,
    level: 1,
};

/// Percent-encoding nested deeper than the decoder follows.
pub const PROTOCOL_DEEP_ENCODING: Rule = Rule {
    id: "protocol-deep-encoding",
    number: 2004,
    family: Family::Protocol,
    severity: Severity::Error,
    level: 1,
};

/// A line break followed by an HTTP header, request line or status line, which splits a
/// response or smuggles a request when the value reaches a header or a back end. In body fields
/// only the headers and lines that prose rarely starts a line with count.
pub const PROTOCOL_HEADER_INJECTION: Rule = Rule {
    id: "protocol-header-injection",
    number: 2005,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// The number `2.2250738585072011e-308` or `2.2250738585072012e-308`, whose conversion from
/// text loops forever in PHP 5.2 and 5.3 on x87 CPUs and in Java's `Double.parseDouble` before
/// the fix for CVE-2010-4476.
pub const PROTOCOL_FLOAT_DOS: Rule = Rule {
    id: "protocol-float-dos",
    number: 2006,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// More fields (parameters, cookies, body keys and values) than are inspected in one request.
/// The values past the limit are not inspected, so the request is treated as hiding one.
pub const PROTOCOL_TOO_MANY_FIELDS: Rule = Rule {
    id: "protocol-too-many-fields",
    number: 2007,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// A `Content-Type` charset other than UTF-8, US-ASCII and the Latin-1 family, or more than one
/// charset. A body in EBCDIC or UTF-16, decoded by the upstream, is unreadable to the detectors.
pub const PROTOCOL_CHARSET: Rule = Rule {
    id: "protocol-charset",
    number: 2008,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// An HTTP request line such as `GET http://host/ HTTP/1.1` inside a parameter, cookie, header
/// or path: a request smuggled to a back end that writes the value into its own request.
pub const PROTOCOL_REQUEST_LINE: Rule = Rule {
    id: "protocol-request-line",
    number: 2010,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// A carriage return or line feed in the path, which no resource name contains, or from
/// paranoia level 2 in a query key or value. Either can split the request line or a header
/// that a back end builds from it.
pub const PROTOCOL_LINE_BREAK: Rule = Rule {
    id: "protocol-line-break",
    number: 2011,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// A `Content-Type` parameter whose value is another media type, such as
/// `application/x-www-form-urlencoded; boundary="application/json"`, sent to make a firewall
/// that matches the header as text read the body with the wrong parser.
pub const PROTOCOL_HIDDEN_MEDIA_TYPE: Rule = Rule {
    id: "protocol-hidden-media-type",
    number: 2012,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 1,
};

/// An integer just past a signed or unsigned 32- or 64-bit limit, such as `4294967296`, sent
/// whole to find overflows in the application. Runs from paranoia level 2: some APIs take such
/// limits as sizes or sentinels.
///
/// NOTE: JSON numbers are not fields, so only a parameter, cookie or JSON string is checked.
pub const PROTOCOL_INTEGER_BOUNDARY: Rule = Rule {
    id: "protocol-integer-boundary",
    number: 2009,
    family: Family::Protocol,
    severity: Severity::Critical,
    level: 2,
};

/// An XML entity declaration, `<!ENTITY`. An external one (`SYSTEM` or `PUBLIC`) makes a parser
/// that resolves it read a file or fetch a URL, and internal ones that refer to each other
/// expand exponentially. API clients rarely declare entities.
pub const XXE_ENTITY_DECLARATION: Rule = Rule {
    id: "xxe-entity-declaration",
    number: 2101,
    family: Family::Xxe,
    severity: Severity::Critical,
    level: 1,
};

/// Every rule, in number order.
pub const ALL: &[Rule] = &[
    SQLI_BOOLEAN,
    SQLI_UNION,
    SQLI_STACKED_QUERY,
    SQLI_FUNCTION,
    SQLI_COMMENT_BREAK,
    SQLI_EXECUTABLE_COMMENT,
    SQLI_SUBQUERY,
    SQLI_STRING_BREAK,
    SQLI_STATEMENT,
    SQLI_SYSTEM_TABLE,
    SQLI_COMMENT_OBFUSCATION,
    SQLI_DATABASE_NAME,
    SQLI_TYPE_NAME,
    SQLI_CHARACTER_ANOMALY,
    SQLI_TRAILING_OPERATOR,
    SQLI_EDGE_QUOTE,
    XSS_DANGEROUS_TAG,
    XSS_EVENT_HANDLER,
    XSS_SCRIPT_URL,
    XSS_STYLE_SCRIPT,
    XSS_SCRIPT_SINK,
    XSS_XML_INJECTION,
    XSS_SEVEN_BIT_MARKUP,
    LFI_TRAVERSAL,
    LFI_TRAVERSAL_SINGLE,
    LFI_SENSITIVE_FILE,
    LFI_RESTRICTED_FILE,
    LFI_STREAM_WRAPPER,
    LFI_FILE_URL,
    RFI_IP_URL,
    RFI_METADATA_ADDRESS,
    RFI_SCHEME,
    RFI_TRAILING_QUESTION_MARK,
    RFI_UNIX_SOCKET_URL,
    RFI_DATA_URL,
    RCE_UNIX_COMMAND,
    RCE_WINDOWS_COMMAND,
    RCE_SHELL_SYNTAX,
    RCE_SHELLSHOCK,
    RCE_BRACE_EXPANSION,
    RCE_POWERSHELL,
    RCE_WINDOWS_SHELL,
    RCE_MAIL_COMMAND,
    SSTI_EXPRESSION,
    SSTI_STATEMENT,
    SSTI_PROTOTYPE_POLLUTION,
    SSTI_NODEJS_INJECTION,
    SSTI_ORM_LOOKUP,
    PHP_OPEN_TAG,
    PHP_SUPERGLOBAL,
    PHP_FUNCTION,
    PHP_FUNCTION_CALL,
    PHP_CONFIG_DIRECTIVE,
    PHP_FILE_UPLOAD,
    PHP_EXTENSION_CALL,
    PHP_VARIABLE_FUNCTION,
    JAVA_CODE_INJECTION,
    JAVA_BASE64_GADGET,
    DESERIALIZATION_JAVA,
    DESERIALIZATION_PHP,
    DESERIALIZATION_DOTNET_JSON,
    DESERIALIZATION_YAML_PICKLE,
    PROTOCOL_OVERLONG_UTF8,
    PROTOCOL_NUL_BYTE,
    PROTOCOL_CONTROL_BYTE,
    PROTOCOL_DEEP_ENCODING,
    PROTOCOL_HEADER_INJECTION,
    PROTOCOL_FLOAT_DOS,
    PROTOCOL_TOO_MANY_FIELDS,
    PROTOCOL_CHARSET,
    PROTOCOL_INTEGER_BOUNDARY,
    PROTOCOL_REQUEST_LINE,
    PROTOCOL_LINE_BREAK,
    PROTOCOL_HIDDEN_MEDIA_TYPE,
    XXE_ENTITY_DECLARATION,
];

/// Finds a rule by its id.
pub fn find(id: &str) -> Option<Rule> {
    ALL.iter().copied().find(|rule| rule.id == id)
}
