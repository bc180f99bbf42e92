//! Chat templates: Gemma's fallback turn format (as the llama.cpp fixtures' chat prompts write
//! it), Jinja templates rendered with bos handling, and hostile templates failing cleanly:
//! endless loops, and templates that would allocate far more than any prompt needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use metallic_models::chat::{self, ChatMessage, ChatTemplate};

#[test]
fn the_gemma_fallback_matches_the_fixture_prompts() {
    let one = [ChatMessage::new("user", "Write a haiku about the ocean.")];
    assert_eq!(
        ChatTemplate::Gemma.render(&one, "<bos>", "<eos>", true).unwrap(),
        "<start_of_turn>user\nWrite a haiku about the ocean.<end_of_turn>\n<start_of_turn>model\n"
    );
    let turns = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
        ChatMessage::new("user", "2+2?"),
    ];
    assert_eq!(
        ChatTemplate::Gemma.render(&turns, "<bos>", "<eos>", false).unwrap(),
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
         <start_of_turn>user\n2+2?<end_of_turn>\n"
    );
}

const CHATML: &str = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                      {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[test]
fn jinja_templates_render_and_a_leading_bos_is_left_to_the_tokenizer() {
    let t = ChatTemplate::Jinja(CHATML.into());
    let text = t.render(&[ChatMessage::new("user", "Hi")], "<s>", "</s>", true).unwrap();
    assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn hostile_templates_are_errors_not_hangs() {
    let cases = [
        ("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "fuel"),
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
        ("{% for m in messages %}", "chat template"),
        ("{{ messages[0].content.nope() }}", "chat template"),
    ];
    for (source, message) in cases {
        let err =
            ChatTemplate::Jinja(source.into()).render(&[ChatMessage::new("user", "x")], "", "", true).unwrap_err();
        assert!(err.to_string().contains(message), "{source}: {err}");
    }
}

/// A list that holds the same list twice, 60 times over: 2^60 leaves in a few hundred bytes.
const DOUBLED: &str =
    "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}";

/// Renders `source` for one short message, which must fail quickly with `want` in the message.
fn refused(source: &str, want: &str) {
    let start = Instant::now();
    let err = ChatTemplate::Jinja(source.into()).render(&[ChatMessage::new("user", "hello")], "", "", true);
    let elapsed = start.elapsed();
    let err = err.expect_err(source).to_string();
    assert!(err.starts_with("invalid input: chat template:"), "{source}: {err}");
    assert!(err.contains(want), "{source}: {err}");
    assert!(elapsed < Duration::from_secs(1), "{source}: took {elapsed:?}");
}

#[test]
fn templates_that_would_allocate_too_much_fail_before_allocating() {
    let limit = chat::output_limit(&[ChatMessage::new("user", "hello")]);
    assert_eq!(limit, (1 << 20) + 8 * 9);
    let too_much = format!("would make more than {limit} bytes");
    let cases: Vec<(String, String)> = vec![
        // The template: 3 GB of spaces per line.
        ("{{ messages|tojson(indent=3000000000) }}".into(), "tojson indent 3000000000 exceeds 64".into()),
        ("{{ messages|tojson(65) }}".into(), "tojson indent 65 exceeds 64".into()),
        ("{{ 'a\nb'|indent(3000000000) }}".into(), "indent width 3000000000 exceeds 64".into()),
        ("{% filter indent(width=100) %}a\nb{% endfilter %}".into(), "indent width 100 exceeds 64".into()),
        // Repetition: minijinja refuses before allocating (fuel, or its own caps).
        ("{{ 'x' * 10**9 }}".into(), "ran out of fuel".into()),
        ("{% set s = 'x' * 10**9 %}".into(), "it may take 2000000 steps".into()),
        ("{{ [1] * 10**9 }}".into(), "repeated sequence is too large".into()),
        ("{{ range(10**9)|join }}".into(), "range has too many elements".into()),
        ("{{ ([1] * 10**8)|join }}".into(), format!("join {too_much}")),
        ("{{ range(100000)|join('x' * 100) }}".into(), format!("join {too_much}")),
        ("{{ ('x' * 10**6)|join(',') }}".into(), format!("join {too_much}")),
        // A string doubled in a loop.
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}".into(),
            format!("~ {too_much}"),
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}".into(),
            format!("+ {too_much}"),
        ),
        ("{{ ('x' * 1000)|replace('x', 'y' * 100000) }}".into(), format!("replace {too_much}")),
        ("{{ ('ab' * 1000)|replace('', 'y' * 1000) }}".into(), format!("replace {too_much}")),
        ("{{ '%1000000000s'|format('x') }}".into(), format!("format {too_much}")),
        ("{{ '%-0.1000000000f'|format(1.5) }}".into(), format!("format {too_much}")),
        ("{{ (['x' * 1000] * 10000)|sum(start='') }}".into(), "sum would copy more than".into()),
        ("{{ ([[1] * 1000000] * 100)|sum(start=[])|length }}".into(), format!("sum {too_much}")),
        // The doubled list turned into text every way a template can, except `~`.
        (format!("{DOUBLED}{{{{ ns.x|tojson }}}}"), format!("tojson {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x|string }}}}"), format!("string {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x|pprint }}}}"), format!("pprint {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x|join }}}}"), format!("join {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x|upper }}}}"), format!("upper {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x|indent(2) }}}}"), format!("indent {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x|replace('1', '2') }}}}"), format!("replace {too_much}")),
        (format!("{DOUBLED}{{{{ '%s'|format(ns.x) }}}}"), format!("format {too_much}")),
        (format!("{DOUBLED}{{{{ '%(x)s'|format(x=ns.x) }}}}"), format!("format {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x is startingwith('[') }}}}"), format!("startingwith {too_much}")),
        (format!("{DOUBLED}{{{{ raise_exception(ns.x) }}}}"), format!("raise_exception {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x }}}}"), format!("{{{{ }}}} {too_much}")),
        (format!("{DOUBLED}{{% set s %}}{{{{ ns.x }}}}{{% endset %}}"), format!("{{{{ }}}} {too_much}")),
        // The doubled list given to the operators, which would walk or copy it whole.
        (format!("{DOUBLED}{{{{ ns.x ~ '' }}}}"), format!("~ {too_much}")),
        (format!("{DOUBLED}{{{{ '' ~ ns.x }}}}"), format!("~ {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x == [ns.x] }}}}"), format!("== {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x != [1] }}}}"), format!("!= {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x < [ns.x] }}}}"), format!("< {too_much}")),
        (format!("{DOUBLED}{{{{ [1] >= ns.x }}}}"), format!(">= {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x in [[1]] }}}}"), format!("in {too_much}")),
        (format!("{DOUBLED}{{{{ 1 not in ns.x }}}}"), format!("in {too_much}")),
        (format!("{DOUBLED}{{{{ {{ns.x: 1, 'a': 2}} }}}}"), format!("a map key {too_much}")),
        (format!("{DOUBLED}{{{{ [ns.x, [1]]|sort }}}}"), format!("sort {too_much}")),
        (format!("{DOUBLED}{{{{ [ns.x, [1]]|unique|list }}}}"), format!("unique {too_much}")),
        (format!("{DOUBLED}{{{{ [ns.x, [1]]|max }}}}"), format!("max {too_much}")),
        (format!("{DOUBLED}{{{{ [ns.x, [1]]|min }}}}"), format!("min {too_much}")),
        (format!("{DOUBLED}{{{{ [[1], [2]]|select('equalto', ns.x)|list }}}}"), format!("equalto {too_much}")),
        (format!("{DOUBLED}{{{{ ns.x is eq([1]) }}}}"), format!("eq {too_much}")),
        (format!("{DOUBLED}{{{{ 1 is in(ns.x) }}}}"), format!("in {too_much}")),
        (
            format!("{DOUBLED}{{% for i in [1, 2] %}}{{{{ loop.changed(ns.x) }}}}{{% endfor %}}"),
            format!("loop.changed {too_much}"),
        ),
        // `+` of lists doubled in a loop, which minijinja copies once 32 additions are chained.
        (
            "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}{% set ns.x = ns.x + ns.x %}{% endfor %}".into(),
            format!("+ {too_much}"),
        ),
        // Checks that pass but look at half a megabyte each time, in a loop: charged to the fuel.
        (
            "{% set big = [messages] * 5000 %}{% for i in range(100000) %}{% if big is startingwith('x') %}{% endif %}{% endfor %}"
                .into(),
            "ran out of fuel".into(),
        ),
        // Output written bit by bit.
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}".into(), format!("rendered output exceeds {limit} bytes")),
        (
            "{% for i in range(100000) %}{{ messages|tojson }}{% endfor %}".into(),
            format!("rendered output exceeds {limit} bytes"),
        ),
        // Too deep to turn into text.
        (
            "{% set ns = namespace(x=[]) %}{% for i in range(100) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|tojson }}"
                .into(),
            "tojson: a value nested deeper than 64 levels".into(),
        ),
    ];
    for (source, want) in &cases {
        refused(source, want);
    }
}

#[test]
fn templates_that_cannot_be_checked_are_refused() {
    refused("{% set a = 1 %}{{ a < 2 < 3 }}", "chained comparisons (a < b < c) are not supported");
    refused("{% if messages %}{% endif %}{{ debug() }}", "debug() is not available");
}

/// Expressions over every checked operator, filter and test, each rendered by minijinja as it
/// comes and through the chat template path: the checks must not change a result or an error.
#[test]
fn checked_operators_give_minijinja_results() {
    // Operands through variables: minijinja folds operators on constants while compiling.
    let binary = [
        ("'a'", "~", "'b'"),
        ("1", "~", "2"),
        ("none", "~", "'x'"),
        ("nothing", "~", "'x'"),
        ("[1, 'a']", "~", "{'k': [2]}"),
        ("1.5", "~", "true"),
        ("'a'|safe", "~", "'b'|safe"),
        ("'a'|safe", "~", "'b'"),
        ("1", "+", "2"),
        ("1", "+", "2.5"),
        ("'a'", "+", "'b'"),
        ("[1]", "+", "[2, 3]"),
        ("(1, 2)", "+", "(3,)"),
        ("true", "+", "1"),
        ("1", "+", "true"),
        ("9223372036854775807", "+", "1"),
        ("170141183460469231731687303715884105727", "+", "1"),
        ("1", "+", "'a'"),
        ("'a'", "+", "1"),
        ("[1]", "+", "1"),
        ("1", "+", "none"),
        ("none", "+", "1"),
        ("1", "+", "nothing"),
        ("nothing", "+", "1"),
        ("'a'", "+", "nothing"),
        ("[1]", "+", "range(3)"),
        ("range(2)", "+", "[5]"),
        ("1", "==", "1.0"),
        ("[1, [2]]", "==", "[1, [2]]"),
        ("{'a': 1}", "==", "{'a': 1}"),
        ("'a'", "!=", "'b'"),
        ("[1]", "!=", "[1]"),
        ("1", "<", "2"),
        ("'b'", "<", "'a'"),
        ("[1, 2]", "<", "[1, 3]"),
        ("2", "<=", "2"),
        ("none", "<", "1"),
        ("2", "<", "2"),
        ("2", ">", "2"),
        ("2", ">=", "2"),
        ("3", ">", "2.5"),
        ("[2]", ">=", "[1, 9]"),
        ("'b'", "in", "'abc'"),
        ("1", "in", "[1, 2]"),
        ("'k'", "in", "{'k': 1}"),
        ("[2]", "in", "[[1], [2]]"),
        ("1", "in", "nothing"),
        ("1", "in", "5"),
        ("'x'", "not in", "'abc'"),
    ];
    let expressions = [
        "{'b': one, 'a': 2, 'b': 3}",
        "{[one]: 'l', 2: 'n'}|items|list",
        "{}",
        "[3, one, 2]|sort",
        "['b', 'A', 'a']|sort(case_sensitive=true)",
        "[1, 2, one]|unique|list",
        "[4, 2]|min",
        "[4, 2]|max",
        "{'b': one, 'a': 2}|dictsort",
        "[{'r': 1}, {'r': 2}, {'r': one}]|groupby('r')|list",
        "[1, 2, 3]|select('equalto', 2)|list",
        "[1, 2, 3]|reject('lt', 2)|list",
        "[1, 2]|select('in', [2])|list",
        "2 is eq(2)",
        "2 is ne 3",
        "2 is greaterthan 1",
        "2 is le(2)",
        "1 is in([1])",
        "'a' is in('abc')",
    ];
    let statements = [
        "{% for m in [1, 1, 2] %}{{ loop.changed(m) }}{% endfor %}",
        "{% for m in messages %}{% if m.role == 'user' %}[{{ m['content'] ~ '!' }}]{% endif %}{% endfor %}",
        "{% macro f(a, b=2) %}{{ a + b }}{% endmacro %}{{ f(1) }}{{ f(1, b=5) }}",
        "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
    ];
    let mut plain = minijinja::Environment::new();
    plain.set_fuel(Some(chat::FUEL));
    let messages = [ChatMessage::new("user", "hello")];
    let sources = binary
        .iter()
        .map(|(l, op, r)| {
            format!("{{% set l = {l} %}}{{% set r = {r} %}}{{{{ l {op} r }}}}|{{{{ (l {op} r) is safe }}}}")
        })
        .chain(expressions.iter().map(|e| format!("{{% set one = 1 %}}{{{{ {e} }}}}")))
        .chain(statements.iter().map(|s| s.to_string()));
    for source in sources {
        let want = plain.render_str(
            &source,
            minijinja::context! { messages => [minijinja::context! { role => "user", content => "hello" }] },
        );
        let got = ChatTemplate::Jinja(source.clone()).render(&messages, "", "", false);
        match (want, got) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "{source}"),
            (Err(_), Err(_)) => {}
            (want, got) => panic!("{source}: minijinja gives {want:?}, the chat template path {got:?}"),
        }
    }
}

#[test]
fn the_output_limit_grows_with_the_messages() {
    let long = "word ".repeat(400_000);
    let messages = [ChatMessage::new("user", &long)];
    assert_eq!(chat::output_limit(&messages), (1 << 20) + 8 * (4 + long.len()));
    let text = ChatTemplate::Jinja(CHATML.into()).render(&messages, "<s>", "</s>", true).unwrap();
    assert_eq!(text.len(), long.len() + "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n".len());
    let json = ChatTemplate::Jinja("{{ messages|tojson(indent=4) }}".into()).render(&messages, "", "", false).unwrap();
    assert!(json.len() > long.len() && json.contains("\"role\": \"user\""), "{}", &json[..100]);
    // Three copies fit, nine do not.
    let three = "{% for i in range(3) %}{{ messages[0].content }}{% endfor %}";
    assert_eq!(ChatTemplate::Jinja(three.into()).render(&messages, "", "", false).unwrap().len(), 3 * long.len());
    let nine = "{% for i in range(9) %}{{ messages[0].content }}{% endfor %}";
    let err = ChatTemplate::Jinja(nine.into()).render(&messages, "", "", false).unwrap_err();
    assert!(err.to_string().contains("rendered output exceeds"), "{err}");
}

#[test]
fn checked_filters_render_like_minijinja_s_own() {
    let messages = [
        ChatMessage::new("system", "Be <brief> & 'kind'."),
        ChatMessage::new("user", "Hi\n\"there\"\tü 你好"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    let sources = [
        "{{ messages|tojson }}",
        "{{ messages|tojson(indent=4) }}",
        "{{ messages|tojson(true) }}",
        "{{ messages[1]|tojson(indent=2) }}",
        "{{ messages|pprint }}",
        "{{ messages[0]|string }}",
        "{{ messages|join(', ', attribute='role') }}",
        "{{ messages|map(attribute='content')|join(d=' | ') }}",
        "{{ 'abc'|join('-') }}",
        "{{ [1, 2, 3]|join }}",
        "{{ messages[1].content|indent(2) }}",
        "{{ messages[1].content|indent(width=3, first=true, blank=true) }}",
        "{{ 'aaa'|replace('a', 'bb') }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ 'aaa'|replace('a', 'b', count=1) }}",
        "{{ 'abc'|replace('', '-') }}|{{ 'aaa'|replace('a', 'b', -1) }}",
        "{{ '%s: %5d|%-6.2f|%%'|format('n', 42, 3.14159) }}{{ '%(x)s'|format(x=messages[0]) }}",
        "{{ '%s and %s'|format(messages[0].role, messages[1]) }}",
        "{{ [1, 2, 3]|sum }}|{{ ['a', 'b']|sum(start='') }}|{{ [[1], [2]]|sum(start=[]) }}",
        "{{ messages|sum(attribute='content', start='') }}",
        "{{ messages[0].content|upper }}{{ messages[0].content|lower|title }}{{ ' x '|trim }}{{ 'ab'|capitalize }}",
        "{{ messages[1].content|split|list }}{{ messages[1].content|lines|list }}{{ '<a>'|escape }}{{ '4'|int + 1 }}",
        "{{ messages[0].role is startingwith('sys') }}{{ messages[0].role is endingwith('x') }}",
        "{{ messages[1]|upper }}",
        "{% filter upper %}{{ messages[2].content }}{% endfilter %}",
    ];
    let mut plain = minijinja::Environment::new();
    plain.add_template("t", "").unwrap();
    let value: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| minijinja::Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
        .collect();
    for source in sources {
        let want = plain
            .template_from_str(source)
            .unwrap()
            .render(minijinja::context! { messages => value.as_slice() })
            .unwrap();
        let got = ChatTemplate::Jinja(source.into()).render(&messages, "", "", false).unwrap();
        assert_eq!(got, want, "{source}");
    }
    // And errors stay errors.
    for source in ["{{ 'a'|replace('a') }}", "{{ 'a'|replace('a', 'b', 1, 2) }}", "{{ 'a'|replace('a', 'b', nope=1) }}"]
    {
        assert!(ChatTemplate::Jinja(source.into()).render(&messages, "", "", false).is_err(), "{source}");
    }
}

/// Lists nested as deep as the fuel allows are dropped recursively: on the render's own
/// large-stack thread that is an ordinary error, not a stack overflow that aborts the process
/// (this test's own thread has a 2 MiB stack, where ~9,000 levels overflowed).
#[test]
fn deeply_nested_values_are_an_error_not_a_crash() {
    let source = "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% for j in range(1000) %}\
                  {% set ns.x = [ns.x] %}{% endfor %}{% endfor %}x";
    let started = std::time::Instant::now();
    let err = ChatTemplate::Jinja(source.into()).render(&[ChatMessage::new("user", "Hi")], "", "", true).unwrap_err();
    assert!(err.to_string().starts_with("invalid input: chat template:") && err.to_string().contains("fuel"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}
