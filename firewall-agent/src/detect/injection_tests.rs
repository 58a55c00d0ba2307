//! Tests of the command injection, cross-site scripting, file inclusion and template
//! injection detectors: attack shapes that must reach the request threshold and benign
//! shapes that must not.

use super::normalise::FieldEncoding;
use super::{FieldKind, inspect_value};

fn score(raw: &str, kind: FieldKind) -> u32 {
    inspect_value(raw.as_bytes(), FieldEncoding::Form, kind)
        .iter()
        .map(|rule| rule.severity.weight())
        .sum()
}

fn rule_ids(raw: &str, kind: FieldKind) -> Vec<&'static str> {
    inspect_value(raw.as_bytes(), FieldEncoding::Form, kind)
        .iter()
        .map(|rule| rule.id)
        .collect()
}

fn assert_blocked_as(values: &[&str], kind: FieldKind) {
    for value in values {
        assert!(score(value, kind) >= 5, "not blocked: {value:?} {:?}", rule_ids(value, kind));
    }
}

fn assert_passed_as(values: &[&str], kind: FieldKind) {
    for value in values {
        assert!(score(value, kind) < 5, "blocked: {value:?} {:?}", rule_ids(value, kind));
    }
}

#[test]
fn shell_obfuscation_is_blocked() {
    assert_blocked_as(
        &[
            "ping``%20203.0.113.5",
            "pi$()ng 203.0.113.5",
            "una$$me -a",
            "cu$u\\rl example.com",
            "%22%22p%22%22y%22%22t%22%22h%22%22o%22%22n%22%223%22%22 cmd",
            "'i'p a",
            "{n$u\\c$u,-nlvp,777}",
            "c{a,oun}t /etc/hosts",
            "{,ifconfig}",
            "cat%2B%2Fet*%2F*wd",
            "echo | ${gcc7.4}gcc7.4",
        ],
        FieldKind::Query,
    );
}

#[test]
fn shell_command_lines_are_blocked() {
    assert_blocked_as(
        &[
            "flock -u / whoami",
            "cpulimit -l 100 -f whoami",
            "time bsdtar",
            "env --version",
            ";`cat<<<'ifconfig'`",
            ";irb<<<1+2",
            ";ps",
            "whoami",
            "pip3 install something",
            "ansible-galaxy collection install community.general",
            "code=ansible-console",
            "/bin/ab",
            "usr/local/bin/ansible",
            "garb=adduse[r];$garb pizza",
            "a=/etc&&b=/passwd&&c=cat&&$c $a$b",
        ],
        FieldKind::Query,
    );
    assert_blocked_as(&[";env", "ansible all -m ping", "visudo"], FieldKind::Header);
}

#[test]
fn shell_expansions_are_blocked() {
    assert_blocked_as(
        &["alias a=b", "alias %2Bm a=b", "alias ls-al='ls -al'", "~%2B", "~-1", "!-1!-2"],
        FieldKind::Query,
    );
}

#[test]
fn batch_syntax_is_blocked() {
    assert_blocked_as(
        &[
            "for /r c:\\ %variable in (set) do command",
            "& FOR %_ IN (a,b,c) DO cmd",
            "IF /I NOT 1==2 CMD",
            "if %n1% gtr %n2% echo %n1% is greater",
            "IF CMDEXTVERSION 1 GOTO start_process",
            "if a==b foo",
        ],
        FieldKind::Query,
    );
    assert_passed_as(&["if foo==", "iffoo a==b foo", "if3 a==b foo"], FieldKind::Query);
}

#[test]
fn mail_commands_after_crlf_are_blocked() {
    assert_blocked_as(
        &["%0d%0aDATA", "%0d%0aQUIT", "%0d%0aa001 EXAMINE INBOX", "%0d%0aA282 SEARCH FLAGGED"],
        FieldKind::Query,
    );
    assert_passed_as(
        &[
            "Hello! World.%0adata not found.",
            "%0aLet's go to the store (sale time!)",
            "Hey please do not quit",
            "Just to remind you that I need to copy those documents",
        ],
        FieldKind::Query,
    );
}

#[test]
fn prose_and_api_values_pass_the_shell_detector() {
    assert_passed_as(
        &[
            "report_final_v3 (copy).pdf",
            "Python is a language",
            "time is of the essence",
            "time warner",
            "https://www.example.com/x?s=2014-11-01&ex=7&sort=ex&sort=descending",
            "uname",
            "red;$5 each",
            ";$a $b $c",
            "O'keefe's",
            "Size: 8\"x11\"",
            "fields={id,name}",
            "~%2Bz",
            "~0",
            "copy & paste",
            "The pizza vendor was known by the alias \"pineapple\" online.",
            "I see, so your alias is not = to your name",
            "ping pong tables",
            "tar is a dark brown or black viscous liquid",
        ],
        FieldKind::Query,
    );
    assert_passed_as(
        &["wget", "curl/7.81.0", "python-requests/2.31.0", "Mozilla/5.0 (Linux; Android 14; wv) AppleWebKit/537.36"],
        FieldKind::Header,
    );
}

#[test]
fn xss_variants_are_blocked() {
    assert_blocked_as(
        &[
            "%20%20onabcdefgh%3d%20",
            "<\"onwebkitplaybacktargetavailabilitychanged=",
            "x%3Dx%3Aurl%28javascript",
            "%3Cf%20o%20r%20m",
            "%3C%20x%3A%20script",
            "$%3Cd%20i%20a%20l%20o%20g",
            "%20data%3A%20%2C%20%3Cx%3E",
            "a=(![]%2B[])[%2B!%2B[]]",
            "%2B!![]",
            "new Function()",
            "btoa()",
            "<acp xmlns:xi=\"http://www.w3.org/2001/XInclude\"><xi:include href=\"http://example.com/foo\"/></acp>",
            "<aai xmlns=\"http://a.b/\" xsi:schemaLocation=\"http://a.b/ http://example.com/a.xsd\">aai</aai>",
            "foo!ENTITY %25 bar SYSTEM",
            "<input pattern=\"^a regex$\">",
            "import { sayHi, sayBye } from \"./greeting.js\";",
            "import * as m from 'https://example.com/m.js'",
            "import('//example.com/x.js')",
            // Without a dot or a bracket, the quote is the only byte that lets the cheap byte
            // check run the pattern.
            "import * as m from 'payload'",
            "import {steal} from \"lib\"",
        ],
        FieldKind::Query,
    );
}

#[test]
fn seven_bit_markup_is_blocked() {
    assert_blocked_as(
        &[
            "\\xbcscript\\xbealert(\\xa2XSS\\xa2)\\xbc/script\\xbe",
            "\\xd0\\xbcscript\\xd0\\xbealert(1)\\xd0\\xbc/script\\xd0\\xbe",
            "\\xbctest\\xbetest(\\xa2XSS\\xa2)\\xbc/test\\xbe",
            "\\xbcimg src=x onerror=alert(1)\\xbe",
            "%C2%BCscript%C2%BEalert(1)%C2%BC/script%C2%BE",
        ],
        FieldKind::Query,
    );
    assert_passed_as(
        &[
            "\u{bc} cup sugar, \u{be} cup flour",
            "b'\\xbc\\xde\\xbe'",
            "\\xbcHello world",
            "2\u{bc} inch pipe",
            "\\xbcscript\\xbealert(1)",
            "\\xbcscript\\xbealert(1)\\xbc/script",
        ],
        FieldKind::Query,
    );
}

#[test]
fn markup_lookalikes_pass_the_xss_detector() {
    assert_passed_as(
        &[
            "online=true",
            "Condition: on sale",
            "![diagram](https://example.com/a.png)",
            "<b class=\"note\">bold</b>",
            "if a < b and c > d",
            "data:image/png;base64,iVBORw0KGgo=",
            "<note><to>Ann</to></note>",
            "<input type=\"text\" name=\"q\">",
            "if you're willing to import (and perhaps wait around",
            "we import goods from 'partners'",
        ],
        FieldKind::Query,
    );
}

#[test]
fn file_inclusion_variants_are_blocked() {
    assert_blocked_as(
        &[
            "..\\pineapple",
            "..;/..;/admin",
            "../.history",
            "/proc/net/tcp",
            "/get/proc/interrupts",
            "backup.sql.zip",
            "/wp-content/debug.log",
            ">/tmp/curl",
        ],
        FieldKind::Query,
    );
    assert_blocked_as(&["../1.7z", "..\\1.7z"], FieldKind::FileName);
    assert_passed_as(&["../images/logo.png", ">/tmp", "report.sql", "/history/2024"], FieldKind::Query);
}

#[test]
fn generic_injection_variants_are_blocked() {
    assert_blocked_as(
        &[
            "c%5Cu006fnsole.info(1)",
            "console.info.call(this,1)",
            "process%5Breq.query.a",
            "require[req.query.a",
            "new Function (",
            "XyQkTkRfRlVOQyQkXwo=",
            "_$$\\u004e\\u0044_FUNC$$_\\u0066unction()",
            "__\\u0070\\u0072oto__.foo=bar",
            "http://192.0.0.192/latest/user-data/",
            "user__profile__icontains",
            "created_by__departments__employees__user__username__startswith",
            "password__isnull",
            "{\"username__startswith\":\"p\"}",
            "XyQkXHUwMDRlXHUwMDQ0X0ZVTkMkJF9cdTAwNjZ1bmN0aW9uKCkK",
        ],
        FieldKind::Query,
    );
    assert_passed_as(
        &["balance__gte", "price__lt", "__init__", "snake_case_name", "The process [draft] is ready"],
        FieldKind::Query,
    );
}

#[test]
fn misaligned_base64_gadget_names_are_found() {
    // `runtime` and `processbuilder` Base64-encoded at the second and third byte alignment.
    assert_blocked_as(&["HJ1bnRpbWU", "test=cnVudGltZQ", "HByb2Nlc3NidWlsZGVy"], FieldKind::RawBody);
    assert_passed_as(&["dGhlIHF1aWNrIGJyb3duIGZveA", "SGVsbG8gd29ybGQ"], FieldKind::RawBody);
}

/// Finds a gadget name in Base64 runs the plain way: each run decoded at four alignments into a
/// new buffer, lowercased, and searched name by name.
fn base64_gadget_by_search(text: &str) -> Option<&'static str> {
    const JAVA: &[&str] = &[
        "runtime", "processbuilder", "clonetransformer", "forclosure", "instantiatefactory",
        "instantiatetransformer", "invokertransformer", "prototypeclonefactory",
        "prototypeserializationfactory", "whileclosure", "chainedtransformer", "classloader",
        "java.lang",
    ];
    const NODE: &[&str] = &["_$$nd_func$$_", "_func$$_"];
    let runs = text
        .split(|character: char| !(character.is_ascii_alphanumeric() || matches!(character, '+' | '/' | '-' | '_')))
        .filter(|run| run.len() >= 10)
        .take(16);
    for run in runs {
        for shift in 0..4 {
            let Some(start) = run.get(shift..) else {
                break;
            };
            let symbols: Vec<u8> = start
                .bytes()
                .map_while(|byte| match byte {
                    b'A'..=b'Z' => Some(byte - b'A'),
                    b'a'..=b'z' => Some(byte - b'a' + 26),
                    b'0'..=b'9' => Some(byte - b'0' + 52),
                    b'+' | b'-' => Some(62),
                    b'/' | b'_' => Some(63),
                    _ => None,
                })
                .collect();
            let mut decoded = Vec::new();
            for group in symbols.chunks(4) {
                let bits: u32 = group.iter().fold(0, |bits, symbol| (bits << 6) | u32::from(*symbol));
                // A group of n symbols carries 6n bits, of which whole bytes are kept.
                let whole_bytes = group.len() * 6 / 8;
                let aligned = bits << (24 - 6 * group.len());
                decoded.extend_from_slice(&aligned.to_be_bytes()[1..1 + whole_bytes]);
            }
            let lowered_bytes = decoded.to_ascii_lowercase();
            let contains = |needle: &str| lowered_bytes.windows(needle.len()).any(|window| window == needle.as_bytes());
            if NODE.iter().any(|marker| contains(marker)) {
                return Some("node");
            }
            let java = JAVA.iter().any(|name| {
                let lost = if name.len() >= 7 { 2 } else { 1 };
                let head = &lowered_bytes[..lowered_bytes.len().min(name.len() + 1)];
                contains(name) || head.windows(name.len() - lost).any(|window| window == &name.as_bytes()[lost..])
            });
            if java {
                return Some("java");
            }
        }
    }
    None
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

    #[test]
    fn base64_gadget_search_matches_plain_search(
        text in "([A-Za-z0-9+/_-]{0,40}|[A-Za-z0-9]{60,200}|cnVudGltZQ|HJ1bnRpbWU|dGhlIHF1aWNrIGJyb3duIGZveA|HByb2Nlc3NidWlsZGVy|amF2YS5sYW5n|XyQkTkRfRlVOQyQkXw|ORD-[0-9]{1,4}-[0-9]{3}|Smith-Jones|x{10,200}|[ .=\u{eb}]){1,6}",
    ) {
        let label = super::signatures::base64_gadget_label(&text);
        proptest::prop_assert_eq!(label, base64_gadget_by_search(&text), "text {:?}", text);
    }
}

#[test]
fn vendor_headers_are_inspected_and_standard_ones_skipped() {
    use http::{HeaderMap, HeaderValue};

    use super::{RequestParts, extract_fields};

    let mut headers = HeaderMap::new();
    headers.insert("x-filename", HeaderValue::from_static("../../etc/passwd"));
    headers.insert("authorization", HeaderValue::from_static("Bearer abc.def.ghi"));
    headers.insert("accept", HeaderValue::from_static("text/html"));
    headers.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    let fields = extract_fields(RequestParts {
        path: "/",
        query: None,
        headers: &headers,
        inspected_headers: &[],
        body: b"",
    });
    let names: Vec<String> = fields.iter().map(|field| fields.name(field).into_owned()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    assert!(names.contains(&"header:x-filename"), "{names:?}");
    assert!(!names.contains(&"header:authorization"), "{names:?}");
    assert!(!names.contains(&"header:accept"), "{names:?}");
    assert!(!names.contains(&"header:sec-fetch-mode"), "{names:?}");
}

#[test]
fn signature_table_fits_the_prefilter_bit_set() {
    let (compiled, written) = super::signatures::signature_counts();
    assert_eq!(compiled, written);
    assert!(written < 128, "{written} patterns do not fit the 128-bit candidate set");
}

/// Payload pieces that together reach every signature pattern, for the prefilter test.
const SIGNATURE_PIECES: &[&str] = &[
    "../etc/passwd", "/proc/self/environ", "c:\\windows\\win.ini", ".git/config", "id_rsa",
    "/.env", "/proc/net/tcp", ".bash_history", "backup.sql.zip", "php://filter", "file:///etc",
    "http://169.254.169.254/latest/", "gopher://x", "http://203.0.113.9/a?", "${ifs}", "() { :;};",
    "/dev/tcp/x", "{cat,/etc/hosts}", "invoke-expression", "iex(", "cmd /c", "%comspec%",
    "{{7*7}}", "${7*7}", "<%= 7 %>", "[% x %]", "{% if %}", "__proto__", "constructor.prototype",
    "require('child_process')", "process.env", "console.log(1)", "new function(", "user__profile__icontains",
    "<?php", "$_get", "eval(", "system(", "allow_url_include", "exec /*x*/ (", "('system')(",
    "$_s erver[", "return\"system\"(", "fopen (", "file\t(", "pg_query(", "$f(1)", "memory_limit=1", "ssh2.exec://",
    "checkdate()", "usort ('a')", "date_add(", "crypt(abc)", "set_error_handler(",
    "file_exists(", "vsprintf(", "rawurldecode(", "gethostbynamel(", "posix_getpwuid(", "apcu_fetch(",
    "call_user_func_array(", "is_writable(", "register_tick_function(", "filemtime(",
    "information_schema", "msdb", "waitfor delay '", "2.2250738585072011e-308", "java.lang.runtime", "${jndi:ldap:", "runtime.exec", "aced0005",
    "o:8:\"stdclass\":1:{", "\"$type\":\"system.x\"", "!!python/object", "cos\nsystem",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn prefilter_loses_no_signature_match(
        pieces in proptest::collection::vec(proptest::sample::select(SIGNATURE_PIECES), 1..4),
        glue in "[ ;=/a-z0-9]{0,3}",
    ) {
        let text = pieces.join(&glue);
        let mut filtered = super::signatures::signature_rules_filtered(&text);
        let mut unfiltered = super::signatures::signature_rules_unfiltered(&text);
        filtered.sort_unstable();
        unfiltered.sort_unstable();
        proptest::prop_assert_eq!(filtered, unfiltered, "text {:?}", text);
    }
}

#[test]
fn prefilter_matches_every_piece() {
    for piece in SIGNATURE_PIECES {
        let mut filtered = super::signatures::signature_rules_filtered(piece);
        let mut unfiltered = super::signatures::signature_rules_unfiltered(piece);
        filtered.sort_unstable();
        unfiltered.sort_unstable();
        assert_eq!(filtered, unfiltered, "piece {piece:?}");
        assert!(!unfiltered.is_empty(), "no signature matches {piece:?}");
    }
}

#[test]
fn system_catalogue_names_are_blocked() {
    assert_blocked_as(
        &["msdb", "mysql.db", "MSysAccessObjects", "'msdasql'", "msdb..sysjobs"],
        FieldKind::Query,
    );
    assert_passed_as(&["msdbx", "mysql database", "my.db", "system objects", "Northwind Traders"], FieldKind::Query);
}

#[test]
fn time_delay_past_the_token_limit_is_blocked() {
    let user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0.0.0 Safari/537.36-1 waitfor delay '0:0:15' --";
    assert_blocked_as(&[user_agent], FieldKind::Header);
    assert_passed_as(
        &["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) waitfor the delay"],
        FieldKind::Header,
    );
}

#[test]
fn float_conversion_hang_is_blocked() {
    assert_blocked_as(
        &["2.2250738585072011e-308", "{\"2.2250738585072011e-308\":\"foo\"}", "q=2.2250738585072012e-0308"],
        FieldKind::Query,
    );
    assert_passed_as(&["2.2250738585072014e-308", "2.225e-308", "1e-308"], FieldKind::Query);
}

#[test]
fn php_call_patterns_need_a_bracket() {
    for first in SIGNATURE_PIECES {
        for second in SIGNATURE_PIECES {
            let text = format!("{first} {second}").replace('(', " ");
            let rules = super::signatures::signature_rules_unfiltered(&text);
            assert!(!rules.contains(&"php-function"), "{text:?}");
            assert!(!rules.contains(&"php-function-call"), "{text:?}");
        }
    }
}
