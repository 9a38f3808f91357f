/* The Jinja-subset interpreter behind chat templates: every construct the Qwen2-VL, Qwen2.5-VL and
 * Qwen3-VL templates use (and the rest of the supported subset) on templates written here, with
 * expected outputs checked against Jinja2 3.1 configured as transformers does; whitespace control;
 * errors naming the construct and line; every limit; allocation failures at every point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/testing.h"
#include "fusemap/chat.h"

/* Three messages: a system string, a user list (image + text), an assistant string with a
 * reasoning block. */
static const char MSGS[] =
    "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \" "
    "Hi! \"}]},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nplan\\n</think>\\n\\nHello\"}]";

/* Renders tmpl over msgs; the text (caller frees) or NULL with *st / err set. */
static char *render_opts(const char *tmpl, const char *msgs, const fm_chat_render_options *o,
                         fm_status *st, fm_error *err) {
    fm_chat_template *t = NULL;
    fm_chat_prompt p = {0};
    *st = fm_chat_template_parse(tmpl, strlen(tmpl), "test.jinja", &t, err);
    if (*st == FM_OK) *st = fm_chat_render(t, msgs, strlen(msgs), o, &p, err);
    char *s = NULL;
    if (*st == FM_OK && (s = malloc(p.len + 1))) memcpy(s, p.text, p.len + 1);
    fm_chat_prompt_free(&p);
    fm_chat_template_free(t);
    return s;
}

static char *render(const char *tmpl, const char *msgs, fm_status *st, fm_error *err) {
    return render_opts(tmpl, msgs, NULL, st, err);
}

typedef struct jcase {
    const char *tmpl, *want;
} jcase;

/* Expected outputs: Jinja2 3.1 (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
 * loopcontrols, transformers' tojson) on the same template and MSGS. */
static const jcase g_cases[] = {
    {"{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 "
     "}}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
     "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;"},
    {"{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }} {% else %}none{% "
     "endfor %}",
     "1:user 2:assistant "},
    {"{% for x in [] %}x{% else %}empty{% endfor %}", "empty"},
    {"{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, "
     "2]] %}{{ a + b }}{% endfor %}",
     "a=1;b=2;3"},
    {"{% for m in messages %}{{ loop.previtem is defined }}{{ loop.nextitem is defined }}{{ "
     "loop.cycle('a', 'b') }}{% endfor %}",
     "FalseTrueaTrueTruebTrueFalsea"},
    {"{% for i in range(6) %}{% if i == 1 %}{% continue %}{% elif i == 4 %}{% break %}{% endif "
     "%}{{ i }}{% endfor %}",
     "023"},
    {"{% set x = 1 %}{% for i in [2, 3] %}{% set x = i %}{{ x }}{% endfor %}{{ x }}{% if true %}{% "
     "set y = 'if' %}{% endif %}{{ y }}",
     "231if"},
    {"{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set "
     "ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}",
     "3sua"},
    {"{% macro m(a, b='B') %}[{{ a }}|{{ b }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(a=3) }}{{ "
     "m(1, b=4) }}{{ m() }}",
     "[1|B][1|2][3|B][1|4][|B]"},
    {"{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(3) ~ '!' }}",
     "321!"},
    {"{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set blk %}x{{ a }}y{% endset %}[{{ blk }}]", "12[x1y]"},
    {"{% if messages[0].role == 'system' %}s{% elif false %}e{% else %}o{% endif %}{{ 'y' if "
     "messages|length > 2 else 'n' }}{{ 'z' if false }}",
     "sy"},
    {"{{ 7 + 2 }} {{ 7 - 9 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 "
     "% 3 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }}",
     "9 -2 21 3.5 3 -4 1 2 1024 2.5 0.30000000000000004 1e+20"},
    {"{{ 1 < 2 < 3 }} {{ 2 >= 3 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ not true }} "
     "{{ true and 'x' }} {{ 0 or 'y' }} {{ 'b' in 'abc' }} {{ 3 not in [1, 2] }} {{ 'role' in "
     "messages[0] }}",
     "True False True True True False x y True True True"},
    {"{{ 'a' ~ 1 ~ none ~ true ~ undefined_name }}|{{ [1, 'a', none, 1.5, (2,)] }}|{{ {'k': 'v'} "
     "}}",
     "a1NoneTrue|[1, 'a', None, 1.5, (2,)]|{'k': 'v'}"},
    {"{{ messages[0].role }}{{ messages[0]['role'] }}{{ messages[-1].role }}{{ messages[9] is "
     "defined }}{{ messages[0].nokey is defined }}{{ none.x is defined }}",
     "systemsystemassistantFalseFalseFalse"},
    {"{{ 'hello'[1:3] }}|{{ 'hello'[::-1] }}|{{ 'hello'[-2:] }}|{{ [1, 2, 3, 4, 5][::2] }}|{{ "
     "messages[::-1][0].role }}|{{ 'héllo'[1] }}",
     "el|olleh|lo|[1, 3, 5]|assistant|é"},
    {"{{ messages|length }} {{ 'héllo'|length }} {{ nothing|length }} {{ "
     "messages[1].content|length }} {{ {'a': 1}|count }}",
     "3 5 0 2 1"},
    {"{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number "
     "}}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}{{ {} is mapping }}{{ [] is "
     "iterable }}{{ 3 is odd }}{{ 4 is even }}{{ 6 is divisibleby 3 }}{{ 1 is not string }}{{ 2 is "
     "eq 2 }}",
     "FalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"{{ messages[2].content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') "
     "}}|{{ messages[2].content.split('</think>')[-1].lstrip('\\n') }}",
     "plan|Hello"},
    {"{{ messages[1].content[1].text.strip() }}|{{ messages[1].content[1].text|trim }}|{{ "
     "'xxhixx'.strip('x') }}|{{ ' a  b '.split() }}|{{ 'a,b,c'.split(',', 1) }}|{{ "
     "'a,b,c'.rsplit(',', 1) }}",
     "Hi!|Hi!|hi|['a', 'b']|['a', 'b,c']|['a,b', 'c']"},
    {"{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abcabc'.find('c') }}{{ "
     "'abcabc'.rfind('c') }}{{ 'aaa'.count('a') }}{{ '-'.join(['a', 'b']) }}{{ 'aXbX'.replace('X', "
     "'.') }}{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}",
     "TrueTrue253a-ba.b.ABab"},
    {"{{ messages[0]|tojson }}|{{ {'a': [1, 2.5, none, true], 'b': 'é\\n\"'}|tojson }}|{{ [1, "
     "{'x': 2}]|tojson(indent=2) }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
     "{\"role\": \"system\", \"content\": \"Be brief.\"}|{\"a\": [1, 2.5, null, true], \"b\": "
     "\"é\\n\\\"\"}|[\n  1,\n  {\n    \"x\": 2\n  }\n]|{\"a\": 2, \"b\": 1}"},
    {"{{ 'Hi'|upper }}{{ 'Hi'|lower }}{{ 'hi there'|capitalize }}{{ 'aXb'|replace('X', '-') }}{{ "
     "[3, 1]|first }}{{ [3, 1]|last }}{{ [1, 2]|join(', ') }}{{ 'ab'|list }}{{ 'abc'|reverse }}{{ "
     "[1, 2]|reverse|list }}",
     "HIhiHi therea-b311, 2['a', 'b']cba[2, 1]"},
    {"{{ nothing|default('D') }}{{ ''|default('E', true) }}{{ none|d('F') }}{{ '12'|int + 1 }}{{ "
     "'2.5'|float }}{{ -3|abs }}{{ 5|string ~ 'x' }}{{ {'a': 1}|items|list }}",
     "DENone132.535x[('a', 1)]"},
    {"{{ messages|selectattr('role', 'equalto', 'user')|list|length }}{{ "
     "messages|map(attribute='role')|join(',') }}{{ [1, 0, 2]|select|list }}{{ [1, 0, "
     "2]|reject|list }}{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|list }}",
     "1system,user,assistant[1, 2][0]['system', 'assistant']"},
    {"{{ messages[0].get('role') }}{{ messages[0].get('x', 'dflt') }}{{ messages[0].keys()|list "
     "}}{{ messages[0].values()|list|length }}{{ dict(a=1)['a'] }}{{ namespace(v=2).v }}{{ "
     "range(3)|list }}{{ range(1, 10, 4)|list }}",
     "systemdflt['role', 'content']212[0, 1, 2][1, 5, 9]"},
    {"{{ \"a\" 'b' }}{{ '\\x41\\u00e9\\t|' }}{{ 0x1F }}{{ 1_000 }}{{ 1.5e3 }}{{ True }}{{ None "
     "}}{% raw %}{{ raw }}{% endraw %}",
     "abAé\t|3110001500.0TrueNone{{ raw }}"},
    {"a\n{# comment #}\nb {# c -#}   c\n  {% if true %}\n  d\n  {% endif %}\ne {%- if true %} f {% "
     "endif -%}  \n g\n",
     "a\nb c\n  d\ne f g"},
    {"x\n  {%+ if true %}y{% endif %}\n{% if true +%}\nz{% endif %}", "x\n  y\nz"},
};

static void test_constructs_match_jinja2(void) {
    for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++) {
        fm_status st;
        fm_error err = {0};
        char *got = render(g_cases[i].tmpl, MSGS, &st, &err);
        CHECK_MSG(st == FM_OK, "case %zu: %s", i, err.msg);
        if (got)
            CHECK_MSG(!strcmp(got, g_cases[i].want),
                      "case %zu:\n  template %s\n  expected \"%s\"\n  seen     \"%s\"", i,
                      g_cases[i].tmpl, g_cases[i].want, got);
        free(got);
    }
}

/* HF's AssistantTracker tag renders its body; a trailing newline of the template is dropped
 * (keep_trailing_newline=False); CRLF becomes LF. */
static void test_generation_tag_and_newlines(void) {
    fm_status st;
    fm_error err;
    char *a = render("{% generation %}gen{% endgeneration %}|", MSGS, &st, &err);
    char *b = render("x\r\ny\r\n", MSGS, &st, &err);
    char *c = render("x\n\n", MSGS, &st, &err);
    CHECK_EQ_STR("gen|", a);
    CHECK_EQ_STR("x\ny", b);
    CHECK_EQ_STR("x\n", c);
    free(a), free(b), free(c);
}

typedef struct ecase {
    const char *tmpl;
    fm_status st;
    const char *needle; /* in the message */
} ecase;

static void test_errors_name_construct_and_line(void) {
    static const ecase cases[] = {
        {"a\n{% include 'x' %}", FM_ERR_INPUT, "line 2: 'include' statements are not supported"},
        {"{{ x | nosuch }}", FM_ERR_INPUT, "line 1: unknown filter 'nosuch'"},
        {"\n\n{% if x is nosuch %}{% endif %}", FM_ERR_INPUT, "line 3: unknown test 'nosuch'"},
        {"{% for x in y %}", FM_ERR_INPUT, "'for' block not closed"},
        {"{% endfor %}", FM_ERR_INPUT, "line 1: unknown or misplaced statement 'endfor'"},
        {"{% break %}", FM_ERR_INPUT, "'break' outside a for loop"},
        {"{{ 'open }}", FM_ERR_INPUT, "unterminated string"},
        {"{{ (1 }}", FM_ERR_INPUT, "unexpected '}', expected ')'"},
        {"{{ (1", FM_ERR_INPUT, "unexpected end of template"},
        {"{{ 1 ] }}", FM_ERR_INPUT, "unexpected ']'"},
        {"{# never closed", FM_ERR_INPUT, "missing end of comment"},
        {"{{ a @ b }}", FM_ERR_INPUT, "unexpected character '@'"},
        {"{% for x in y recursive %}{% endfor %}", FM_ERR_INPUT,
         "recursive for loops are not supported"},
        {"{{ '%s' % 1 }}", FM_ERR_UNSUPPORTED, "string formatting"},
        {"{{ 'h\xc3\xa9'|upper }}", FM_ERR_UNSUPPORTED, "non-ASCII"},
        {"\n{{ raise_exception('no tools allowed') }}", FM_ERR_INPUT,
         "line 2: the template raised an error: no tools allowed"},
        {"{{ x.y }}", FM_ERR_INPUT, "'x' is undefined"},
        {"{{ 1 + 'a' }}", FM_ERR_INPUT, "unsupported operand type(s) for +: 'int' and 'str'"},
        {"{{ 1 // 0 }}", FM_ERR_INPUT, "division or modulo by zero"},
        {"{{ 9223372036854775807 + 1 }}", FM_ERR_OVERFLOW, "64-bit"},
        {"{% for a, b in [[1, 2, 3]] %}{% endfor %}", FM_ERR_INPUT, "too many values to unpack"},
        {"{% for m in none %}{% endfor %}", FM_ERR_INPUT, "'NoneType' object is not iterable"},
        {"{{ nothing|tojson }}", FM_ERR_INPUT, "not JSON serializable"},
        {"{{ range }}", FM_ERR_INPUT, "cannot be printed"},
        {"{{ range(200000)|length }}", FM_ERR_LIMIT, "range too big"},
        {"{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", FM_ERR_INPUT,
         "takes not more than 1 argument"},
        {"{% set x = 1 %}{% set x.y = 2 %}", FM_ERR_INPUT,
         "can only set attributes of a namespace"},
        {"{{ '\\N{BULLET}' }}", FM_ERR_INPUT, "\\N{...} escapes are not supported"},
        {"{{ '\\ud800' }}", FM_ERR_INPUT, "invalid code point"},
        {"{{ 99999999999999999999 }}", FM_ERR_INPUT, "too large integer"},
        {"{{ loop.changed }}", FM_ERR_INPUT, "'loop' is undefined"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fm_status st;
        fm_error err = {0};
        char *got = render(cases[i].tmpl, MSGS, &st, &err);
        CHECK_MSG(st == cases[i].st, "case %zu (%s): expected %s, seen %s (%s)", i, cases[i].tmpl,
                  fm_status_name(cases[i].st), fm_status_name(st), err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].needle) != NULL, "case %zu: expected \"%s\" in \"%s\"",
                  i, cases[i].needle, err.msg);
        CHECK_MSG(!got || st != FM_OK, "case %zu: output on error", i);
        free(got);
    }
}

static void expect_limit(const char *tmpl, const fm_chat_render_options *o, fm_status want,
                         const char *needle) {
    fm_status st;
    fm_error err = {0};
    char *got = render_opts(tmpl, MSGS, o, &st, &err);
    CHECK_MSG(st == want, "%.60s: expected %s, seen %s (%s)", tmpl, fm_status_name(want),
              fm_status_name(st), err.msg);
    CHECK_CONTAINS(err.msg, needle);
    free(got);
}

static void test_limits(void) {
    fm_chat_render_options o;
    fm_chat_render_options_init(&o);
    o.max_output_bytes = 100;
    expect_limit("{% for i in range(50) %}xxxxx{% endfor %}", &o, FM_ERR_LIMIT, "output limit");
    expect_limit("{% set s = 'x' * 1000 %}", &o, FM_ERR_LIMIT, "output limit");
    fm_chat_render_options_init(&o);
    o.max_iterations = 100;
    expect_limit("{% for i in range(20) %}{% for j in range(20) %}{% endfor %}{% endfor %}", &o,
                 FM_ERR_LIMIT, "loop iterations and macro calls");
    expect_limit("{% macro a() %}x{% endmacro %}{% macro b() %}{{ a() }}{{ a() }}{% endmacro %}"
                 "{% macro c() %}{{ b() }}{{ b() }}{% endmacro %}{% macro d() %}{{ c() }}{{ c() "
                 "}}{% endmacro %}"
                 "{% macro e() %}{{ d() }}{{ d() }}{% endmacro %}{% macro f() %}{{ e() }}{{ e() "
                 "}}{% endmacro %}"
                 "{% macro g() %}{{ f() }}{{ f() }}{% endmacro %}{{ g() }}",
                 &o, FM_ERR_LIMIT, "loop iterations and macro calls");
    fm_chat_render_options_init(&o);
    expect_limit("{% macro r() %}{{ r() }}{% endmacro %}{{ r() }}", &o, FM_ERR_LIMIT,
                 "nested deeper than 64");
    o.max_memory_bytes = 64 << 10;
    expect_limit("{% set ns = namespace(l=[]) %}{% for i in range(5000) %}{% set ns.l = ns.l + [i] "
                 "%}{% endfor %}",
                 &o, FM_ERR_LIMIT, "bytes of memory");
    fm_chat_render_options_init(&o);
    o.max_work = 20000;
    expect_limit("{% set s = 'x' * 5000 %}{% for i in range(10) %}{{ 'y' in s }}{% endfor %}", &o,
                 FM_ERR_LIMIT, "units of work");
    fm_chat_render_options_init(&o);
    expect_limit("{% set ns = namespace(l=[]) %}{% for i in range(300) %}{% set ns.l = [ns.l] %}{% "
                 "endfor %}{{ ns.l }}",
                 &o, FM_ERR_INPUT, "nested too deeply");
}

static void test_parse_limits(void) {
    size_t big = FM_CHAT_MAX_TEMPLATE_BYTES + 1;
    char *t = malloc(big + 1);
    fm_chat_template *tp = NULL;
    fm_error err = {0};
    memset(t, 'x', big);
    t[big] = '\0';
    CHECK_STATUS(FM_ERR_LIMIT, fm_chat_template_parse(t, big, "big", &tp, &err), &err);
    CHECK(tp == NULL);
    /* 150 nested parentheses, then 150 nested ifs: both over the nesting limit. */
    size_t n = 0;
    n += (size_t)sprintf(t + n, "{{ ");
    for (int i = 0; i < 150; i++)
        t[n++] = '(';
    t[n++] = '1';
    for (int i = 0; i < 150; i++)
        t[n++] = ')';
    n += (size_t)sprintf(t + n, " }}");
    CHECK_STATUS(FM_ERR_INPUT, fm_chat_template_parse(t, n, "deep", &tp, &err), &err);
    CHECK_CONTAINS(err.msg, "nested too deeply");
    n = 0;
    for (int i = 0; i < 150; i++)
        n += (size_t)sprintf(t + n, "{%% if x %%}");
    for (int i = 0; i < 150; i++)
        n += (size_t)sprintf(t + n, "{%% endif %%}");
    CHECK_STATUS(FM_ERR_INPUT, fm_chat_template_parse(t, n, "deep", &tp, &err), &err);
    CHECK_CONTAINS(err.msg, "nested too deeply");
    CHECK_STATUS(FM_ERR_INPUT, fm_chat_template_parse("a\xff", 2, "utf8", &tp, &err), &err);
    CHECK_CONTAINS(err.msg, "invalid UTF-8 at byte 1");
    free(t);
}

/* A template using most constructs at once, for the allocation sweep. */
static const char SWEEP_TMPL[] =
    "{%- set ns = namespace(n=0, last=messages|length - 1) %}\n"
    "{%- macro part(p, count) %}{% if p is string %}{{ p }}{% else %}{% for x in p %}"
    "{% if x.type == 'image' %}{% if count %}{% set ns.n = ns.n + 1 %}{% endif %}<img {{ ns.n }}>"
    "{% elif 'text' in x %}{{ x.text|trim }}{% endif %}{% endfor %}{% endif %}{% endmacro %}\n"
    "{%- for m in messages[::-1] %}{% set c = part(m.content, false) %}{% if c.startswith('<') "
    "%}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}\n"
    "{%- for m in messages %}{% set c = part(m.content, true) %}"
    "{% if '</think>' in c %}{% set c = c.split('</think>')[-1].lstrip('\\n') %}{% endif %}"
    "{{ '<|im_start|>' + m.role + '\\n' + c + '<|im_end|>\\n' }}{{ m|tojson }}{% endfor %}"
    "{{ [1, 2]|join(', ') ~ ns.last }}{% if add_generation_prompt %}<|im_start|>assistant\\n{% "
    "endif %}";

static void test_allocation_failures(void) {
    fm_status st;
    fm_error err = {0};
    char *want = render(SWEEP_TMPL, MSGS, &st, &err);
    CHECK_OK(st, &err);
    int failures = 0;
    for (uint64_t nth = 1; nth < 100000; nth++) {
        fm_fault_set(FM_FAULT_ALLOC, nth);
        char *got = render(SWEEP_TMPL, MSGS, &st, &err);
        uint64_t seen = fm_fault_count(FM_FAULT_ALLOC);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (seen < nth) { /* no failure was injected: the whole run succeeded */
            CHECK_OK(st, &err);
            if (got && want) CHECK_EQ_STR(want, got);
            free(got);
            break;
        }
        failures++;
        CHECK_MSG(st == FM_ERR_NOMEM, "allocation %llu: expected FM_ERR_NOMEM, seen %s (%s)",
                  (unsigned long long)nth, fm_status_name(st), err.msg);
        CHECK(got == NULL);
        free(got);
    }
    CHECK_MSG(failures > 20, "only %d allocation points", failures);
    free(want);
}

int main(void) {
    RUN(test_constructs_match_jinja2);
    RUN(test_generation_tag_and_newlines);
    RUN(test_errors_name_construct_and_line);
    RUN(test_limits);
    RUN(test_parse_limits);
    RUN(test_allocation_failures);
    TEST_END();
}
