//! Tests of the SQL injection tokenizer and fingerprint rules, one group per class of bypass,
//! and of the ordinary values that must stay clean.

use http::{HeaderMap, HeaderValue};

use super::super::normalise::FieldEncoding;
use super::super::{FieldKind, RequestParts, extract_fields, inspect_fields, inspect_value};
use super::fingerprint;

fn sqli_rules(raw: &str, kind: FieldKind) -> Vec<&'static str> {
    inspect_value(raw.as_bytes(), FieldEncoding::Plain, kind)
        .iter()
        .filter(|rule| rule.id.starts_with("sqli-"))
        .map(|rule| rule.id)
        .collect()
}

fn assert_detected(values: &[&str]) {
    for value in values {
        assert!(
            !sqli_rules(value, FieldKind::Query).is_empty(),
            "not detected: {value:?}"
        );
    }
}

fn assert_clean(values: &[&str]) {
    for value in values {
        let rules = sqli_rules(value, FieldKind::Query);
        assert!(rules.is_empty(), "flagged: {value:?} {rules:?}");
    }
}

#[test]
fn fingerprint_reads_casts_and_literals() {
    assert_eq!(fingerprint("password::int", None), "nC");
    assert_eq!(fingerprint("std::string", None), "nn");
    assert_eq!(fingerprint("1.e(ascii)", None), "P(n)");
    assert_eq!(fingerprint("x'41' or 1", None), "s&1");
    assert_eq!(fingerprint("0x41 or 0b01", None), "1&1");
    assert_eq!(fingerprint("` as `t` from", Some('`')), "sAnk");
}

#[test]
fn fingerprint_tells_known_functions_from_names() {
    assert_eq!(fingerprint("database(", None), "F(");
    assert_eq!(fingerprint("count (x)", None), "f(n)");
    assert_eq!(fingerprint("appuser(x)", None), "f(n)");
    assert_eq!(fingerprint("sleep (5)", None), "T(1)");
    assert_eq!(fingerprint("sleep well", None), "nn");
}

#[test]
fn fragments_after_and_or_are_detected() {
    assert_detected(&[
        "AND 2771=1709)",
        "or 120=121=",
        "||(null!=",
        "&&(l=!0)",
        "|| langCode == '",
        "OR CType='",
        "and 1=(",
        "OR 1# ",
    ]);
}

#[test]
fn statements_after_a_separator_are_detected() {
    assert_detected(&[
        "; insert into",
        ";drop",
        ";SET @OLD_SQL_MODE",
        "declare @b",
        "DECLARE/**/@x",
        "exec (@",
        "DROP sampletable;--",
    ]);
}

#[test]
fn query_middles_are_detected() {
    assert_detected(&[
        ") as cc FROM",
        ") AS `carrier_id` from",
        "` AS `edit_user_id` from",
        ") when 234 then",
        "1234 AS \"foobar\" FROM tablevar2=whatever",
        "HAVING 1=",
        "VALUES ('192.168.0.1', 'test')",
        "ORder by",
        "FROM termine GROUP BY tag1",
    ]);
}

#[test]
fn closed_quote_then_keyword_is_detected() {
    assert_detected(&[
        "'alter a",
        "\" ALTER A",
        "'UNION A",
        "'select H",
        "admin@juice-sh.op';",
    ]);
}

#[test]
fn attack_only_names_are_detected() {
    assert_detected(&[
        "xp_dirtree",
        "OPENROWSET",
        "select pg_sleep",
        "EmptyValue into outfile '/tmp/x'; --",
        "1.e(ascii)",
        "1.e.tables",
    ]);
}

#[test]
fn postgres_casts_are_detected() {
    assert_detected(&[
        "password::int",
        "function(foo)::text",
        "1 current_user::int",
    ]);
}

#[test]
fn lone_operators_are_detected() {
    assert_detected(&[
        "<=>",
        "!=",
        "||",
        "&&",
        "XOR",
        "RLIKE",
        "IS NULL",
        "LIKE NULL",
        "in (0,1)",
    ]);
}

#[test]
fn known_function_calls_are_detected() {
    assert_detected(&[
        "database(",
        "current_user(",
        "if(1234=",
        "div(23,-2)",
        "SeLect*/ 1,2,3,user(",
    ]);
}

#[test]
fn backslash_quotes_are_read_both_ways() {
    assert_detected(&[
        "admin@juice-sh.op\\' or json (id);",
        "admin@juice-sh.op\\' or glob (id,id);",
        "\\'or'1",
        "\\\"or\"1",
    ]);
}

#[test]
fn typographic_quotes_are_read_as_quotes() {
    assert_detected(&[
        "\u{2019} OR \u{2019}1\u{2019}=\u{2019}x\u{2019}--",
        "\u{2018} or 1=1/*",
    ]);
}

#[test]
fn path_segments_are_read_from_their_start() {
    let rules = sqli_rules("/post/1234 OR 1=1", FieldKind::Path);
    assert!(rules.contains(&"sqli-boolean"), "{rules:?}");
    let rules = sqli_rules("/post/foo')waitfor delay'5:0:20'--", FieldKind::Path);
    assert!(rules.contains(&"sqli-function"), "{rules:?}");
}

#[test]
fn path_plus_signs_read_as_spaces() {
    let rules = sqli_rules("/post/*/*/2+union+all/bar", FieldKind::Path);
    assert!(rules.contains(&"sqli-union"), "{rules:?}");
    for path in ["/wiki/C++_and_more", "/search/a+b+c/2+union+square", "/tags/1+or+2"] {
        let rules = sqli_rules(path, FieldKind::Path);
        assert!(rules.is_empty(), "{path}: {rules:?}");
    }
}

#[test]
fn embedded_form_values_are_read_from_their_start() {
    assert_detected(&["pay=AND 7639=(", "pay=&&(e===", "a=1&pay=;update users"]);
}

#[test]
fn body_without_content_type_is_form_decoded() {
    let headers = HeaderMap::new();
    let fields = extract_fields(RequestParts {
        path: "/post",
        query: None,
        headers: &headers,
        inspected_headers: &[],
        body: b"UnIon+seleCt%0A",
    });
    let findings = inspect_fields(&fields);
    assert!(
        findings
            .iter()
            .any(|finding| finding.rule.id == "sqli-union"),
        "{findings:?}"
    );
}

#[test]
fn body_with_spaces_keeps_plus_signs() {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("test"));
    let fields = extract_fields(RequestParts {
        path: "/post",
        query: None,
        headers: &headers,
        inspected_headers: &[],
        body: b"1 + 1 = 2",
    });
    let body = fields
        .iter()
        .find(|field| fields.name(field) == "body")
        .map(|field| field.encoding);
    assert_eq!(body, Some(FieldEncoding::Plain));
}

#[test]
fn prose_and_names_stay_clean() {
    assert_clean(&[
        "O'Brien",
        "Liam O'Brien and Zoe D'Angelo",
        "It's 5' 10\" tall",
        "Rock 'n' roll",
        "Tom & Jerry",
        "Q&A",
        "AT&T",
        "R&D (research)",
        "or more",
        "and/or",
        "1 or 2 bedrooms",
        "Select your plan (monthly or yearly)",
        "user(s) added",
        "Count (approx.)",
        "in (approx.) 2 hours",
        "Die \"Union von Europa\"",
        "I like you!",
        "having fun",
        "behaving badly/",
        "A -> B",
        "x = 5, y = 10; what is x + y?",
        "50% off, today only!",
        "std::string",
        "booked for 2021(including 2020",
        "The users' update was delayed",
        "Don\u{2019}t stop, it\u{2019}s fine",
        "`code` and more `code`",
        "first_name=John&last_name=O'Brien",
        "next=/account?tab=orders&sort=date",
        "!!",
        "x'~email--",
        "and last-modified cache validators.",
        "and below <code>priority_highest</code>.",
        "and compat/* mostly).",
        "and 'info sed' for the complete manual.",
        "1.0 or newer is required",
        "For both users' and",
        "values joined using `; `.",
        "'update-ca-certificates --fresh'. If you",
        "options.origins = ['https://example.com', 'https://example.org'];",
        "new URLSearchParams('foo=bar&foo=baz');",
        "* `end` {Function} The [`end` event][] subscriber",
        "For example, `http.STATUS_CODES[404] === 'Not",
        "-",
        "=",
        "like",
        "in",
        "not",
    ]);
}

#[test]
fn json_and_identifier_values_stay_clean() {
    assert_clean(&[
        "{\"name\": \"O'Brien\", \"tags\": [\"a\", \"b\"]}",
        "[1, 2, 3]",
        "user_name",
        "2026-01-15T10:30:00Z",
        "+1 (555) 123-4567",
        "C:\\Users\\me\\file.txt",
        "sp_500_index",
        "xp_points",
        "nvarchar",
    ]);
}

#[test]
fn comments_glued_to_keywords_are_detected() {
    assert_detected(&[
        "drop/*comment*/sampletable",
        "dr/**/op/*bypass*/sampletable",
        "1/**/union/**/select/**/1",
        "sel/**/ect password",
        "x/*a*/or/*b*/1",
    ]);
    assert_clean(&[
        "return/*note*/value",
        "/* select all */ the rows",
        "a/**/b",
        "int/*width*/x",
        "see /* the drop */ below",
    ]);
}

#[test]
fn optimizer_hints_are_detected() {
    assert_eq!(fingerprint("1 or /*+index(t)*/ true", None), "1&Xf(n)1");
    assert_detected(&["9999 or /*+optimizer hint */ true", "select /*+ full(t) */ 1"]);
    assert_clean(&["a /*+1*/ b", "/*+*/", "/* +1 */"]);
}

#[test]
fn dynamic_sql_is_detected() {
    assert_eq!(fingerprint("execute immediate 'drop table t'", None), "Is");
    assert_detected(&[
        "execute immediate \"",
        "EXECUTE IMMEDIATE 'DROP TABLE users'",
        "exec immediate @sql",
    ]);
    assert_clean(&[
        "execute immediately",
        "Please execute immediate shutdown",
        "execute the plan",
    ]);
}

#[test]
fn procedure_analyse_is_detected() {
    assert_detected(&[
        "procedure analyse (",
        "1 procedure analyse(extractvalue(rand(),concat(0x3a,version())),1)",
    ]);
    assert_clean(&[
        "the procedure analyse (see below)",
        "we analyse the procedure (step 2)",
        "procedure analyse",
    ]);
}

#[test]
fn waitfor_with_plus_signs_is_detected() {
    assert_detected(&["\"+waitfor+delay+'", "1;waitfor+time+'00:00'"]);
    assert_clean(&["wait+for+delay", "waitfor+me"]);
}

#[test]
fn literal_comparisons_are_detected() {
    assert_detected(&[
        "'admin', '1'='1'",
        "' or '1'='1",
        "1=1",
        "x=2 and 'a'='a'",
        "1!=11",
        "11<>1",
    ]);
    assert_clean(&[
        "1=2",
        "2+2=4",
        "x=x",
        "ratio 1:1",
        "version 1.2 != 1.3",
        "width=100",
        "1 != 2 in most cases",
        "11!=11",
    ]);
}

#[test]
fn operator_after_a_closed_string_is_detected() {
    assert_eq!(fingerprint("' * from = 1 or '9", Some('\'')), "sok=1&s");
    assert_eq!(fingerprint("'or(glob 1)--", Some('\'')), "s&(o1)c");
    assert_detected(&["' * from = 1 or '9", "' * from = 1 id '9", "'or(glob 1)--", "' or not 1 --"]);
    assert_clean(&[
        "O'Brien - from Ireland",
        "5' - from the top",
        "John's or not -- maybe",
        "Rock 'n' roll or not",
    ]);
}

#[test]
fn plus_signs_are_read_as_spaces() {
    assert_detected(&[
        "from+`oxattribute`+where+convert(`oxattribute`.`oxid`+using+utf8)+=+'n550'+limit",
        "1+union+select+1",
    ]);
    assert_clean(&["c++", "john+tag@example.com", "a+b=c", "abc+def/ghi==", "select+your+plan"]);
}

#[test]
fn bare_procedure_calls_are_detected() {
    assert_eq!(fingerprint("exec master.", None), "En.");
    assert_detected(&["execute php", "EXECUTE node_", "exec master.", "exec sp_who", " SET @OLD_SQL_NOTES"]);
    assert_clean(&[
        "execute the plan",
        "Execute the plan as discussed.",
        "execute payment now",
        "update profile",
        "delete account",
        "set the table",
        "set of 3",
    ]);
}

#[test]
fn closed_identifier_then_operator_is_detected() {
    assert_detected(&["`>65", "`>6fbdec2", "` < 0) AND `", "\"` * 12344", "admin@juice-sh.op`;", "\\`or`1"]);
    assert_clean(&[
        "`code` > 5",
        "run `make` or `cargo`",
        "use `x` and `y`; then stop",
        "the `>` sign",
        "`!1",
        "a`b",
    ]);
}

#[test]
fn dangling_and_or_is_detected() {
    // AND/OR before an opened bracket, or after a quote that a backslash fails to escape in
    // standard SQL.
    assert_detected(&["/3 and(", "/x_R or (", "\\'and"]);
    assert_clean(&[
        "/3 or 4",
        "/Business and",
        "/3 or ",
        "this and",
        "/home/user or ",
        "Joe's and",
        "rock 'n' and",
        "/api and/or",
        "cats and dogs",
    ]);
}

#[test]
fn comment_between_boolean_tokens_is_detected() {
    assert_detected(&[
        "9999 or /* +optimizer hint */ true",
        "9999 or {if length((/*+!5000select username/*!50000from*/user where id=1))>0}",
        "' or /**/ 1",
    ]);
    assert_clean(&["x /* or */ y", "a /* or */ b", "/* draft */ 1 or 2", "1 or 2 items /* note */"]);
}

#[test]
fn clause_fragments_are_detected() {
    assert_detected(&[
        "' alter/",
        "'1' not regexp '2'",
        "user'collate U&\"$1#B#E#D\"--",
        "something LIKE '",
        " case when condition1 then result1",
        "Xunionselectfrom",
        "1\u{b4} OR \u{b4}1\u{b4}=\u{b4}x\u{b4}#;--()",
    ]);
    assert_clean(&[
        "'delete-me'",
        "'red' and 'blue'",
        "I like 'jazz' a lot",
        "something like this",
        "just in case when it rains",
        "the reunion selected a venue",
        "caf\u{e9} d\u{b4}or",
    ]);
}

#[test]
fn long_in_lists_are_detected() {
    let list: Vec<String> = (815_917..815_937).map(|id| id.to_string()).collect();
    let value = format!(" IN ({})", list.join(", "));
    assert_detected(&[value.as_str(), "in (1, 2,"]);
    assert_clean(&["in (3 colours)", "in (a, b, c)", "available in 3, 4, 5"]);
}

#[test]
fn column_count_probes_are_detected() {
    assert_detected(&[
        "' ', 10",
        "'', '', '', '', '', '', '', '', '', '', 13",
        "3' ' 1",
        "'.'.'.'.'.'.'.'",
    ]);
    assert_clean(&[
        "'Paris', 2",
        "' '",
        "'a', 'b', 3",
        "3 'x' y",
        "'v1.2'.'x'",
        "'a'.'b'",
    ]);
}

#[test]
fn inequalities_and_xor_probes_are_detected() {
    assert_detected(&["1 is not 2", "xor 5-", "XOR @a", "selectect user("]);
    assert_clean(&[
        "1 is not 1",
        "it is not 2 days",
        "xor gate",
        "the user(s)",
        "admin user(s)",
    ]);
}

#[test]
fn quote_probes_and_union_all_are_detected() {
    assert_detected(&["\"'", "'\"`", " '\" ", "2 union all/bar", "'x' UNION DISTINCT"]);
    assert_clean(&[
        "\"\"",
        "''",
        "\"'a",
        "1 Union Square",
        "2 Union Street, all floors",
        "workers union all agree",
    ]);
}
