#!/usr/bin/env node
// llama.cpp's side of bench/run_bench.sh: the same tests as `kvllm bench`
// (ppN, tgN, ...@dD, bB tgN) on the same GGUF, run through llama.cpp's CPU
// build as packaged by the npm package node-llama-cpp.
//
// It never installs anything: it loads node-llama-cpp from an existing
// directory (--nlc DIR, else $NLC_DIR, else /tmp/nlc) prepared with
//   mkdir -p /tmp/nlc && cd /tmp/nlc && npm init -y &&
//   npm install --ignore-scripts node-llama-cpp
// and exits 3 with a message when it is not there.
//
// How each test is timed (the same shape as kvllm bench and llama-bench):
//   ppN    one sequence; D random tokens evaluated untimed, then N random
//          tokens in one batch (batchSize >= N) without sampling
//   tgN    one sequence per batch slot; after D untimed tokens, the
//          sequence's generation loop (evaluate() with greedy sampling)
//          runs until N tokens came out: N decode steps of one token each
//   bB tgN B sequences doing the same concurrently; node-llama-cpp puts the
//          B pending tokens of each step into one llama_decode batch
// After each repetition the timed tokens are erased from the KV cache, so the
// depth stays and every repetition starts at the same position. The
// generation loop includes node-llama-cpp's per-token overhead (sampling,
// JS); issue 5 measured it at about 12% slower than llama-bench.
//
// Output: one JSON object per test per line (-o json), or a markdown table.

import { existsSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const USAGE = `usage: node bench/llamacpp_bench.mjs -m MODEL [flags]

  -m PATH          GGUF model
  -p N,..          prompt tokens in one batch, 0..65536, 0 = none (default 512)
  -n N,..          tokens generated one step at a time, 0..65536 (default 128)
  -d D,..          untimed depth before each test, 0..1048576 (default 0)
  -b B,..          sequences generating together, 1..256 (default 1)
  -r N             repetitions, 1..1000 (default 5)
  -t N             threads, 1..1024 (default: cores)
  --fa auto|on|off flash attention (default auto, node-llama-cpp's default)
  -ctk, --cache-type-k T   K cache type (f16, q8_0, q4_0; default llama.cpp's f16)
  -ctv, --cache-type-v T   V cache type (quantized V needs flash attention)
  --nlc DIR        directory holding node_modules/node-llama-cpp
                   (default $NLC_DIR or /tmp/nlc)
  -o text|json     output (default text)
  --gate           before each timed repetition print 'ready TEST REP' to
                   stderr and wait for a line on stdin; after it print
                   'done TEST REP T/S' (as kvllm bench --gate)
`;

function fail(msg, code = 2) {
  process.stderr.write(`llamacpp_bench: ${msg}\n`);
  process.exit(code);
}

function parseIntIn(flag, s, lo, hi) {
  if (!/^-?[0-9]+$/.test(s)) fail(`${flag}: '${s}' is not an integer`);
  const v = Number(s);
  if (v < lo || v > hi) fail(`${flag}: ${v} is outside [${lo}, ${hi}]`);
  return v;
}

function parseList(flag, s, lo, hi) {
  return s.split(",").map((x) => parseIntIn(flag, x, lo, hi));
}

function parseArgs(argv) {
  const o = {
    model: null, p: [512], n: [128], d: [0], b: [1], r: 5, t: 0, fa: "auto",
    nlc: process.env.NLC_DIR || "/tmp/nlc", out: "text", gate: false, ctk: null, ctv: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    if (a === "--gate") {
      o.gate = true;
      continue;
    }
    if (i + 1 >= argv.length) fail(`${a} needs a value`);
    const v = argv[++i];
    switch (a) {
      case "-m": o.model = v; break;
      case "-p": o.p = parseList(a, v, 0, 65536); break;
      case "-n": o.n = parseList(a, v, 0, 65536); break;
      case "-d": o.d = parseList(a, v, 0, 1 << 20); break;
      case "-b": o.b = parseList(a, v, 1, 256); break;
      case "-r": o.r = parseIntIn(a, v, 1, 1000); break;
      case "-t": o.t = parseIntIn(a, v, 1, 1024); break;
      case "--fa":
        if (!["auto", "on", "off"].includes(v)) fail(`--fa: '${v}' is not one of auto, on, off`);
        o.fa = v;
        break;
      case "--nlc": o.nlc = v; break;
      case "-ctk": case "--cache-type-k": o.ctk = v.toUpperCase(); break;
      case "-ctv": case "--cache-type-v": o.ctv = v.toUpperCase(); break;
      case "-o":
        if (!["text", "json"].includes(v)) fail(`-o: '${v}' is not one of text, json`);
        o.out = v;
        break;
      default: fail(`unknown flag '${a}' (see --help)`);
    }
  }
  if (!o.model) fail("-m MODEL is required");
  if (!existsSync(o.model)) fail(`-m: '${o.model}' does not exist`);
  return o;
}

// splitmix64 over BigInt: fixed-seed token ids, as kvllm bench uses
function makeRng(seed) {
  let s = BigInt.asUintN(64, seed);
  return (nVocab) => {
    s = BigInt.asUintN(64, s + 0x9e3779b97f4a7c15n);
    let z = s;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    z = z ^ (z >> 31n);
    return Number(z % BigInt(nVocab));
  };
}

function stats(xs) {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const sd = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  const s = [...xs].sort((a, b) => a - b);
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return { mean, sd, median, min: s[0], max: s[n - 1] };
}

function testName(kind, n, d, b) {
  const depth = d > 0 ? `@d${d}` : "";
  if (kind === "pp") return `pp${n}${depth}`;
  return b === 1 ? `tg${n}${depth}` : `b${b} tg${n}${depth}`;
}

async function loadNlc(dir) {
  const entry = path.join(dir, "node_modules", "node-llama-cpp", "dist", "index.js");
  if (!existsSync(entry)) {
    fail(`node-llama-cpp not found under '${dir}' (expected ${entry}); ` +
      "install it there with npm install --ignore-scripts node-llama-cpp", 3);
  }
  return import(pathToFileURL(entry).href);
}

// vocabulary size: the rows of token_embd.weight (ggml dims: [n_embd, n_vocab])
function nVocabOf(model) {
  const t = (model.fileInfo.tensorInfo || []).find((x) => x.name === "token_embd.weight");
  if (!t) fail(`${model.filename}: no token_embd.weight tensor`, 1);
  return Number(t.dimensions[1]);
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

async function fillDepth(seq, depth, nVocab, rng) {
  if (depth === 0) return;
  const toks = Array.from({ length: depth }, () => rng(nVocab));
  await seq.evaluateWithoutGeneratingNewTokens(toks);
}

async function erasePast(seq, depth) {
  if (seq.nextTokenIndex > depth)
    await seq.eraseContextTokenRanges([{ start: depth, end: seq.nextTokenIndex }]);
}

// One sequence's generation loop: n decode steps, greedy.
async function generate(seq, first, n) {
  let count = 0;
  const it = seq.evaluate([first], { temperature: 0 });
  for await (const tok of it) {
    void tok;
    if (++count >= n) break;
  }
  return count;
}

let stdinLines = null;
let stdinReader = null;
async function waitGate(name, rep) {
  if (!stdinLines) {
    stdinReader = readline.createInterface({ input: process.stdin });
    stdinLines = stdinReader[Symbol.asyncIterator]();
  }
  process.stderr.write(`ready ${name} ${rep}\n`);
  const { done } = await stdinLines.next();
  if (done) throw new Error(`--gate: stdin closed before repetition ${rep}`);
}

async function runTest(llama, model, o, kind, n, d, b, rng) {
  const name = testName(kind, n, d, b);
  const vocab = nVocabOf(model);
  const ctxPerSeq = d + n + 8;
  const fa = o.fa === "auto" ? "auto" : o.fa === "on";
  const context = await model.createContext({
    contextSize: ctxPerSeq,
    sequences: kind === "pp" ? 1 : b,
    batchSize: kind === "pp" ? Math.max(n, 512) : Math.max(512, b),
    threads: o.t || undefined,
    flashAttention: fa,
    ...(o.ctk ? { experimentalKvCacheKeyType: o.ctk } : {}),
    ...(o.ctv ? { experimentalKvCacheValueType: o.ctv } : {}),
  });
  try {
    const seqs = [];
    const nSeq = kind === "pp" ? 1 : b;
    for (let s = 0; s < nSeq; s++) seqs.push(context.getSequence());
    for (const seq of seqs) await fillDepth(seq, d, vocab, rng);
    // warm-up: one token per sequence, erased again
    await Promise.all(seqs.map((seq) => seq.evaluateWithoutGeneratingNewTokens([rng(vocab)])));
    for (const seq of seqs) await erasePast(seq, d);
    const ts = [];
    for (let r = 0; r < o.r; r++) {
      if (o.gate) await waitGate(name, r + 1);
      let sec;
      if (kind === "pp") {
        const toks = Array.from({ length: n }, () => rng(vocab));
        const t0 = now();
        await seqs[0].evaluateWithoutGeneratingNewTokens(toks);
        sec = now() - t0;
      } else {
        const firsts = seqs.map(() => rng(vocab));
        const t0 = now();
        const counts = await Promise.all(seqs.map((seq, i) => generate(seq, firsts[i], n)));
        sec = now() - t0;
        if (counts.some((c) => c !== n)) throw new Error(`generation stopped early: ${counts}`);
      }
      ts.push((n * nSeq) / sec);
      if (o.gate) process.stderr.write(`done ${name} ${r + 1} ${ts[r].toFixed(4)}\n`);
      for (const seq of seqs) await erasePast(seq, d);
    }
    return {
      test: name, kind, n_tokens: n, depth: d, n_seq: nSeq,
      threads: context.idealThreads, flash_attention: String(context.flashAttention),
      kv_type: String(context.kvCacheKeyType), reps: o.r, samples_ts: ts, ...(() => {
        const s = stats(ts);
        return { avg_ts: s.mean, stddev_ts: s.sd, median_ts: s.median, min_ts: s.min, max_ts: s.max };
      })(),
    };
  } finally {
    await context.dispose();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const nlc = await loadNlc(o.nlc);
  const llama = await nlc.getLlama({
    gpu: false, build: "never", logLevel: "error", maxThreads: o.t || undefined,
  });
  const model = await llama.loadModel({ modelPath: o.model, gpuLayers: 0 });
  const rng = makeRng(0x6b766c6c6d62656en);
  const release = llama.llamaCppRelease ? `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}` : "?";
  if (o.out === "text") {
    process.stdout.write(`llama.cpp ${release} via node-llama-cpp, model ${path.basename(o.model)}\n`);
    process.stdout.write("| test | threads | fa | t/s | median t/s |\n| --- | ---: | --- | ---: | ---: |\n");
  }
  for (const d of o.d) {
    const tests = [];
    for (const p of o.p) if (p > 0) tests.push(["pp", p, 1]);
    for (const b of o.b) for (const n of o.n) if (n > 0) tests.push(["tg", n, b]);
    for (const [kind, n, b] of tests) {
      const r = await runTest(llama, model, o, kind, n, d, b, rng);
      r.engine = "llama.cpp";
      r.llama_cpp = release;
      r.model = path.basename(o.model);
      if (o.out === "json") process.stdout.write(JSON.stringify(r) + "\n");
      else
        process.stdout.write(`| ${r.test} | ${r.threads} | ${r.flash_attention} | ` +
          `${r.avg_ts.toFixed(2)} ± ${r.stddev_ts.toFixed(2)} | ${r.median_ts.toFixed(2)} |\n`);
    }
  }
  if (stdinReader) stdinReader.close();
  await model.dispose();
  await llama.dispose();
}

main().catch((e) => fail(String(e && e.stack ? e.stack : e), 1));
