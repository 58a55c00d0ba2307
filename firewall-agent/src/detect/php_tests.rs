//! Tests of the PHP injection signatures: call shapes that must reach the request threshold
//! and prose, names and JSON near them that must not.

use super::normalise::FieldEncoding;
use super::{FieldKind, inspect_value};

fn rule_ids(raw: &str) -> Vec<&'static str> {
    inspect_value(raw.as_bytes(), FieldEncoding::Form, FieldKind::Query)
        .iter()
        .map(|rule| rule.id)
        .collect()
}

fn score(raw: &str) -> u32 {
    inspect_value(raw.as_bytes(), FieldEncoding::Form, FieldKind::Query)
        .iter()
        .map(|rule| rule.severity.weight())
        .sum()
}

fn assert_rule(rule: &str, values: &[&str]) {
    for value in values {
        let ids = rule_ids(value);
        assert!(ids.contains(&rule), "{rule} missing for {value:?}: {ids:?}");
        assert!(score(value) >= 5, "not blocked: {value:?} {ids:?}");
    }
}

fn assert_passed(values: &[&str]) {
    for value in values {
        assert!(score(value) < 5, "blocked: {value:?} {:?}", rule_ids(value));
    }
}

#[test]
fn obfuscated_function_calls_are_blocked() {
    assert_rule(
        "php-function-call",
        &[
            "exec%0A%28%27bar%27%29",
            "FILE%0D%0A%28%29",
            "exec%20%20%28blah%29",
            "%40exec%28%27test%27%29",
            "exec%09%28blah%29",
            "exec%09%2f%2afoo%0d%0abar%2a%2f%09%20%28%29",
            "system()",
            "system ('id')",
            "include ($f)",
            "substr()",
            "subSTR%28%24x%29",
            "assert_OptionS%20%28%0A%0A%29",
            "filegroup%20%20%28blah%29",
            "unPACK%28%24x%29",
            "fopen  (blah)",
            "strip_tags()",
            "printf(foo)",
            "intval(foo)",
            "checkdate/*x*/()",
            "symlink//c%0a()",
            "serialize%23c%0a%28%29",
            "touch/*a%0d%0ab*/()",
            "pi%0b%28%29",
            "range%20%09%2f%2ax%2a%2f%28%29",
            "crypt(abc)",
            "chroot\t()",
            "gethostbynamE(",
        ],
    );
}

#[test]
fn function_words_in_prose_pass() {
    assert_passed(&[
        "system",
        "the system (see below) restarts",
        "Upload your file(s) here",
        "the files (yep)",
        "We require (at least) two forms",
        "include (optional) extras",
        "Please touch (gently) the screen",
        "price range (approx)",
        "the value of pi",
        "eval",
        "checkdate",
        "symlink#x()",
        "xcheckdate()",
        "xucfirst()",
        "autodescription-site-settings[title_strip_tags]",
        "SprintForTheCause",
        "A loaded ghost gun (unserialized) was recovered in the car.",
        "Moreover, phpinfo can potentially leak configuration details",
        "openlogfile(foo)",
        "ceiling height(9ft)",
        "exec (CEO) of the year",
        "substr (substring) returns part of a string",
        "run chmod (change mode) first",
        "Please include your session_id (found in settings)",
        "See the POSIX chmod(2) documentation",
        "file(1) needs the help of external programs",
        "similar to popen(3)",
        "The range (`max - min`) must be less than 2^48",
        "add a message to assert (Josh Broomfield)",
    ]);
}

#[test]
fn method_calls_of_other_languages_pass() {
    assert_passed(&["runner.exec()", "fs.chmod(path, mode)", "v8.serialize(value)", "fs.readfile() on pipes"]);
}

#[test]
fn concatenated_calls_are_blocked() {
    assert_rule("php-function-call", &["'.system('id').'", "1).exec('id')", "\".exec($c)"]);
    assert_rule("php-function", &["eval(chr(112).chr(104))"]);
}

#[test]
fn quoted_function_name_call_is_blocked() {
    assert_rule("php-function", &["return\"system\"(xyz).s", "(\"system  \")(\"whoami\")"]);
    assert_passed(&["the \"system\" (quoted) word", "'exec' was the word"]);
}

#[test]
fn extension_function_calls_are_blocked() {
    assert_rule(
        "php-extension-call",
        &[
            "array_diff (",
            "date_ADD()",
            "pg_enter_pipeline_mode (",
            "ldap_get_entries()",
            "odbc_connection_string_should_quote(",
            "sodium_crypto_aead_chacha20poly1305_ietf_keygen (",
            "tidy_parse_string()",
            "session_start ()",
            "pg_query ('select 1')",
            "zend_test_is_string_marked_as_valid_utf8(",
        ],
    );
    assert_passed(&[
        "array_diff",
        "mb_stristr",
        "zlib_get_coding_type",
        "my_array_diff(",
        "date_of_birth (1990)",
        "pg_dump is a tool",
    ]);
}

#[test]
fn variable_functions_are_blocked() {
    assert_rule(
        "php-variable-function",
        &[
            "$a(1)",
            "$$b(2)",
            "$_(3)",
            "@$__[o](4)",
            "$__['o'](5)",
            "$__[$_[1]](7)",
            "${'a'}(11)",
            "${$s20}['q53b3a6'](13)",
            "$GLOBALS['cf908275'](14)",
            "$OOO000000{0}(15)",
            "$OOO0000O0 (16)",
            "$_aB_4c[5]['d'] /*lol*/ (17)",
            "$_aB_4c/*foo*/[@5]/*bar*/[@d]/*baz*/(19)",
            "$function\r\n (23)",
            "$_aB_4c #foo\r\n\t[5]//bar\r\n\t['d'] /*foo*/ (17)",
            "$$$z(29)",
            "$ {@_.__}(31);",
            "$foo->$funcname()",
            "Foo::$variable()",
            "$a //x\n()",
        ],
    );
    assert_passed(&[
        "$a#foo()",
        "$a//foo()",
        "$a[]()",
        "${}()",
        "$a{}()",
        "Price: $1,299.00 (incl. VAT)",
        "Free shipping on orders over $50 (US only).",
        "$AAPL (Apple) rose 3%",
        "Hello ${name} (admin)",
        "$.ajax({url: '/a'})",
        "query($id: ID!) { user(id: $id) { name } }",
    ]);
}

#[test]
fn split_superglobal_is_blocked() {
    assert_rule("php-superglobal", &["$_%53%20ERVER['REQUEST_URI'];", "$_S ERVER['x']", "$_ g e t[1]"]);
    assert_passed(&["$_ server room", "costs $_ get it"]);
}

#[test]
fn ini_directive_assignment_is_blocked() {
    assert_rule(
        "php-config-directive",
        &[
            "opcache.jit_max_polymorphic_calls=50",
            "engine=true",
            "extension%3dtrue",
            "mbstring.regex_retry_limit=true",
            "precision=true",
            "smtp=true",
            "unserialize_max_depth=true",
            "memory_limit = 512M",
            "extension_dir=/path/to/example",
            "<a probe=\"opcache.jit_max_polymorphic_calls=50\"></a>",
        ],
    );
    assert_passed(&[
        "memory limit",
        "precision",
        "search engine=google is my choice",
        "the file extension = .pdf",
        "engine",
        "mail.example.com",
    ]);
}

#[test]
fn extra_stream_wrappers_are_blocked() {
    assert_rule(
        "lfi-stream-wrapper",
        &[
            "compress.bzip2://file.bz2",
            "ssh2.shell://user:password@example.com:22/xterm",
            "ssh2.exec://user:password@example.com:22/usr/local/bin/kubectl",
            "ssh2.sftp://user:password@example.com:22/path",
        ],
    );
    assert_passed(&["lz77://some_file.lz", "ssh2 shell access", "compress.bzip2 archive"]);
}

fn header_findings(name: &'static str, value: &'static str) -> Vec<&'static str> {
    let mut headers = http::HeaderMap::new();
    headers.insert(name, http::HeaderValue::from_static(value));
    let fields = super::extract_fields(super::RequestParts {
        path: "/upload",
        query: None,
        headers: &headers,
        inspected_headers: &[],
        body: b"",
    });
    super::inspect_fields(&fields).iter().map(|finding| finding.rule.id).collect()
}

#[test]
fn file_name_header_is_a_file_name() {
    assert!(header_findings("x-filename", "test.phar .png").contains(&"php-file-upload"));
    assert!(header_findings("x-file-name", "shell.php.jpg").contains(&"php-file-upload"));
    assert!(!header_findings("x-filename", "report.pdf").contains(&"php-file-upload"));
    assert!(!header_findings("x-comment", "see shell.php.jpg").contains(&"php-file-upload"));
}
