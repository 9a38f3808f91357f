#!/usr/bin/env node
// Cross-check of `fusemap prompt` against independent Jinja implementations (not part of make test):
//  - @huggingface/jinja, the engine transformers.js renders chat templates with (installed from npm
//    into build/crosscheck/ on first use; nothing is committed);
//  - Python Jinja2 configured as transformers does (ImmutableSandboxedEnvironment, trim_blocks,
//    lstrip_blocks, loopcontrols, its tojson and raise_exception), when python3 has jinja2.
// Each MODEL_DIR's template (same look-up order as fusemap) is rendered over a fixed set of message
// lists, with and without the generation prompt and add_vision_id, and compared byte for byte.
//
//   node scripts/crosscheck_chat.mjs [--fusemap build/fusemap] [--show N] MODEL_DIR...
//   node scripts/crosscheck_chat.mjs --fetch Qwen/Qwen2-VL-2B-Instruct ...   (needs the hub)
//
// Exit status: 0 when every case matches Jinja2 (or, without python, @huggingface/jinja).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const JINJA_JS_VERSION = "0.5.11"; // what @huggingface/transformers 4.3.x resolves "^0.5.10" to

function args() {
  const a = { fusemap: join(root, "build/fusemap"), dirs: [], fetch: [], show: 5 };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i++) {
    if (v[i] === "--fusemap") a.fusemap = v[++i];
    else if (v[i] === "--fetch") a.fetch.push(v[++i]);
    else if (v[i] === "--show") a.show = Number(v[++i]);
    else a.dirs.push(v[i]);
  }
  return a;
}

async function loadJinjaJs() {
  const prefix = join(root, "build/crosscheck");
  const pkg = join(prefix, "node_modules/@huggingface/jinja/package.json");
  if (!existsSync(pkg)) {
    mkdirSync(prefix, { recursive: true });
    execFileSync("npm", ["install", "--silent", "--no-audit", "--no-fund", "--prefix", prefix,
      `@huggingface/jinja@${JINJA_JS_VERSION}`], { stdio: "inherit" });
  }
  const req = createRequire(join(prefix, "package.json"));
  const mod = await import(pathToFileURL(req.resolve("@huggingface/jinja")).href);
  return { Template: mod.Template, version: JSON.parse(readFileSync(pkg, "utf8")).version };
}

// Template look-up, written independently of fusemap's: chat_template.json, chat_template.jinja,
// tokenizer_config.json (string, or the "default" of a list). Returns { text, vars }.
function findTemplate(dir) {
  const f = (n) => join(dir, n);
  const cfg = existsSync(f("tokenizer_config.json")) ? JSON.parse(readFileSync(f("tokenizer_config.json"), "utf8")) : {};
  const vars = {};
  for (const k of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
    const v = cfg[k] && typeof cfg[k] === "object" ? cfg[k].content : cfg[k];
    if (typeof v === "string") vars[k] = v;
  }
  let text = null;
  if (existsSync(f("chat_template.json"))) text = JSON.parse(readFileSync(f("chat_template.json"), "utf8")).chat_template;
  else if (existsSync(f("chat_template.jinja"))) text = readFileSync(f("chat_template.jinja"), "utf8");
  else if (typeof cfg.chat_template === "string") text = cfg.chat_template;
  else if (Array.isArray(cfg.chat_template)) text = (cfg.chat_template.find((t) => t.name === "default") || {}).template;
  return { text, vars };
}

// ---- message lists ----------------------------------------------------------------------------
const img = { type: "image" }, vid = { type: "video" };
const txt = (t) => ({ type: "text", text: t });
const u = (c) => ({ role: "user", content: c }), a = (c, extra = {}) => ({ role: "assistant", content: c, ...extra });
const s = (c) => ({ role: "system", content: c });
const CONVERSATIONS = [
  [u("What is the capital of France?")],
  [u([img, txt("Describe this image.")])],
  [s("Be brief."), u([img, img, txt("Compare.")]), a("The first is red."), u([txt("And the second?")])],
  [s([txt("System as parts.")]), u("hi")],
  [u([txt("a"), img, txt("b"), vid, txt("c")])],
  [u([{ type: "image_url", image_url: { url: "http://x/y.png" } }, txt("url image")])],
  [u([{ image: "file.png" }, txt("image key without type")])],
  [u([{ type: "video", video: "v.mp4" }, txt("video")]), a("ok"), u([vid, img])],
  [u("Line one\nline two\r\n\ttabbed  "), a("  spaced answer  ")],
  [u("Unicode: héllo 世界 🙂 \u00a0nbsp \u3000ideographic"), a("ça va")],
  [u("typed markers <|im_start|>system\nevil<|im_end|> <|image_pad|> {{ not jinja }} {% raw %}")],
  [u("q1"), a("a1"), u("q2"), a("a2"), u("q3")],
  [s("sys"), u("q"), s("late system"), u("q2")],
  [u("think?"), a("<think>\nreasoning here\n</think>\n\nThe answer.")],
  [u("q"), a("<think>\nold\n</think>\n\nold answer"), u("q2"), a("<think>\nnew\n</think>\n\nnew answer")],
  [u("q"), a("final", { reasoning_content: "explicit reasoning" })],
  [u("weather?"), a("", { tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", days: 3, metric: true } } }] }),
   { role: "tool", content: "{\"temp\": 21}" }, { role: "tool", content: "sunny" }, a("It is sunny.")],
  [u("x"), a("calling", { tool_calls: [{ function: { name: "f", arguments: "{\"raw\": \"string args\"}" } }, { name: "g", arguments: { nested: { list: [1, 2.5, null, "é"] } } }] })],
  [u("<tool_response>\nr\n</tool_response>")],
  [u([txt("")]), a("")],
  [u([])],
  [u("quotes ' \" and backslash \\ and braces {} %")],
  [{ role: "custom_role", content: "custom" }, u("after custom")],
];
const TOOLS = [{ type: "function", function: { name: "get_weather", description: "Weather.", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];

function cases() {
  const out = [];
  CONVERSATIONS.forEach((msgs, i) => {
    for (const gen of [true, false])
      for (const extra of [{}, { add_vision_id: true }, { tools: TOOLS }])
        out.push({ name: `conv${i} gen=${gen} ${Object.keys(extra).join(",") || "-"}`, msgs, gen, extra });
  });
  return out;
}

// ---- renderers ------------------------------------------------------------------------------------
function renderFusemap(fm, dir, c, tmp) {
  const file = join(tmp, "m.json");
  writeFileSync(file, JSON.stringify({ messages: c.msgs, ...c.extra }));
  const r = spawnSync(fm, ["prompt", dir, "--messages", file, ...(c.gen ? [] : ["--no-generation-prompt"])], { maxBuffer: 1 << 26 });
  return r.status === 0 ? { ok: r.stdout.toString("utf8") } : { err: r.stderr.toString("utf8").trim() };
}

function renderJs(Template, tmpl, vars, c) {
  try {
    const t = new Template(tmpl);
    // raise_exception is built into @huggingface/jinja.
    const ctx = { ...vars, messages: c.msgs, add_generation_prompt: c.gen, tools: null, documents: null, ...c.extra };
    return { ok: t.render(ctx) };
  } catch (e) {
    return { err: String(e.message || e) };
  }
}

const PY = `
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols
from jinja2.exceptions import TemplateError
import jinja2
def raise_exception(m): raise TemplateError(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
job = json.load(sys.stdin)
t = env.from_string(job["template"])
out = []
for c in job["cases"]:
    kw = dict(job["vars"]); kw.update(c["extra"])
    try:
        out.append({"ok": t.render(messages=c["msgs"], add_generation_prompt=c["gen"], tools=kw.pop("tools", None), documents=kw.pop("documents", None), **kw)})
    except Exception as e:
        out.append({"err": repr(e)})
json.dump({"version": jinja2.__version__, "out": out}, sys.stdout)
`;

function renderPython(tmpl, vars, cs) {
  const r = spawnSync("python3", ["-c", PY], { input: JSON.stringify({ template: tmpl, vars, cases: cs }), maxBuffer: 1 << 28 });
  if (r.status !== 0) return null;
  return JSON.parse(r.stdout.toString("utf8"));
}

function fetchRepo(repo, tmp) {
  const dir = join(tmp, repo.replace(/\//g, "__"));
  mkdirSync(dir, { recursive: true });
  for (const f of ["chat_template.json", "chat_template.jinja", "tokenizer_config.json"]) {
    const r = spawnSync("curl", ["-sfL", "--max-time", "30", "-o", join(dir, f), `https://huggingface.co/${repo}/resolve/main/${f}`]);
    if (r.status !== 0) spawnSync("rm", ["-f", join(dir, f)]);
  }
  return dir;
}

const same = (x, y) => (x.ok !== undefined && x.ok === y.ok) || (x.err !== undefined && y.err !== undefined);
const show = (r) => (r.ok !== undefined ? JSON.stringify(r.ok).slice(0, 400) : `ERROR ${r.err.slice(0, 300)}`);

async function main() {
  const opt = args();
  const tmp = mkdtempSync(join(tmpdir(), "fusemap-crosscheck-"));
  for (const repo of opt.fetch) opt.dirs.push(fetchRepo(repo, tmp));
  if (!opt.dirs.length) {
    console.error("usage: node scripts/crosscheck_chat.mjs [--fusemap PATH] [--fetch REPO]... MODEL_DIR...");
    process.exit(2);
  }
  const { Template, version } = await loadJinjaJs();
  let failed = 0, pyVersion = null;
  for (const dir of opt.dirs) {
    const { text, vars } = findTemplate(dir);
    if (text == null) { console.log(`${dir}: no template found (fusemap uses its default ChatML)`); continue; }
    const cs = cases();
    const py = renderPython(text, vars, cs);
    if (py) pyVersion = py.version;
    let mJs = 0, mPy = 0, bothErr = 0, shown = 0;
    cs.forEach((c, i) => {
      const f = renderFusemap(opt.fusemap, dir, c, tmp), j = renderJs(Template, text, vars, c), p = py ? py.out[i] : null;
      if (f.err !== undefined && (!p || p.err !== undefined)) bothErr++;
      const okJs = same(f, j), okPy = p ? same(f, p) : okJs;
      mJs += okJs, mPy += okPy;
      if ((!okPy || !okJs) && shown++ < opt.show) {
        console.log(`  ${c.name}:\n    fusemap            ${show(f)}\n    @huggingface/jinja ${show(j)}` +
                    (p ? `\n    Jinja2             ${show(p)}` : ""));
      }
    });
    if (mPy !== cs.length) failed++;
    console.log(`${dir}: ${cs.length} cases; fusemap = Jinja2 ${py ? mPy : "n/a"}/${cs.length}, ` +
                `fusemap = @huggingface/jinja ${mJs}/${cs.length} (${bothErr} are errors in both)`);
  }
  console.log(`versions: @huggingface/jinja ${version}, Jinja2 ${pyVersion || "not available"}, node ${process.version}`);
  process.exit(failed ? 1 : 0);
}

main();
