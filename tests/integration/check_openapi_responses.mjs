#!/usr/bin/env node
// Checks focald's live responses against server/openapi.json.
//
// usage: BUILD=build node tests/integration/check_openapi_responses.mjs
//
// Starts $BUILD/focald (default build/focald) on a free loopback port with a temporary database and
// --max-body 4096, exercises every route (batches with class-index, multi-hot, dense and single-output
// binary targets; /v1/loss; hard-examples with a cursor; the dataset and sample endpoints; livez, readyz,
// metrics, openapi.json) and a set of error responses, and checks each response against what the spec
// declares for its path, method and status: the status is documented, the Content-Type is one the
// response declares, the headers it declares are present, and a JSON body validates against the
// response's schema ($refs resolved, OpenAPI 3.0's `nullable` turned into JSON Schema) and has no field
// the schema does not declare. It also checks that the routes of server/api.c's `api_routes[]` and the
// operations of the spec's `paths` are the same set, that every route got a validated 2xx, and that
// GET /openapi.json serves server/openapi.json.
//
// Needs Node 20 and ajv 8 + ajv-formats, which it installs when missing with
//   npm install --prefix $BUILD/node-tools ajv@8.20.0 ajv-formats@3.0.1   (cache: $BUILD/npm-cache)
// The last line of output is "ok N" (all N checks passed) or "failed K", preceded by "ok P" for the P
// checks that passed.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BUILD = path.resolve(ROOT, process.env.BUILD || "build");
const FOCALD = path.basename(BUILD) === "focald" ? BUILD : path.join(BUILD, "focald");
const TOOLS = path.join(path.basename(BUILD) === "focald" ? path.dirname(BUILD) : BUILD, "node-tools");
const SPEC_FILE = path.join(ROOT, "server/openapi.json");
const API_C = path.join(ROOT, "server/api.c");
const MAX_BODY = 4096;
const TOOL_VERSIONS = ["ajv@8.20.0", "ajv-formats@3.0.1"];

let passed = 0;
let failed = 0;
const failures = [];

function check(ok, what, details) {
  if (ok) {
    passed++;
  } else {
    failed++;
    failures.push(what);
    console.log(`FAIL ${what}`);
    if (details) console.log(String(details).replace(/^/gm, "     "));
  }
  return ok;
}

function finish(code) {
  if (failed) {
    console.log(`\n${failed} check(s) failed:`);
    for (const f of failures) console.log(`  - ${f}`);
    console.log(`ok ${passed}`);
    console.log(`failed ${failed}`);
  } else {
    console.log(`ok ${passed}`);
  }
  process.exit(code ?? (failed ? 1 : 0));
}

// ------------------------------------------------------------------ ajv, installed on demand

function loadTools() {
  const req = createRequire(path.join(TOOLS, "noop.js"));
  const load = () => {
    const ajvPkg = req("ajv/package.json");
    if (!ajvPkg.version.startsWith("8.")) throw new Error(`ajv ${ajvPkg.version} is not 8.x`);
    const Ajv = req("ajv").default;
    const addFormats = req("ajv-formats").default;
    return { Ajv, addFormats };
  };
  try {
    return load();
  } catch {
    /* not installed yet */
  }
  fs.mkdirSync(TOOLS, { recursive: true });
  const env = {
    ...process.env,
    npm_config_cache: path.join(path.dirname(TOOLS), "npm-cache"),
    npm_config_prefer_offline: "true",
    npm_config_update_notifier: "false",
    npm_config_fund: "false",
    npm_config_audit: "false",
  };
  console.log(`installing ${TOOL_VERSIONS.join(" ")} into ${TOOLS}`);
  const r = spawnSync("npm", ["install", "--prefix", TOOLS, "--no-save", "--no-package-lock", ...TOOL_VERSIONS], {
    env,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.status !== 0) {
    check(false, `npm install ${TOOL_VERSIONS.join(" ")} (exit ${r.status})`);
    finish(1);
  }
  return load();
}

// ------------------------------------------------------------------ OpenAPI 3.0 -> JSON Schema

function pointer(doc, ref) {
  if (!ref.startsWith("#/")) throw new Error(`only local $refs are supported: ${ref}`);
  let node = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === undefined || !(key in node)) throw new Error(`unresolvable $ref ${ref}`);
    node = node[key];
  }
  return node;
}

/** Follows a (non-schema) object's $ref chain: responses, parameters, headers. */
function deref(doc, node) {
  const seen = new Set();
  while (node && node.$ref) {
    if (seen.has(node.$ref)) throw new Error(`$ref cycle at ${node.$ref}`);
    seen.add(node.$ref);
    node = pointer(doc, node.$ref);
  }
  return node;
}

const OAS_ONLY = new Set(["nullable", "example", "examples", "discriminator", "xml", "externalDocs", "deprecated"]);

/**
 * An OpenAPI 3.0 Schema Object as a self-contained JSON Schema (draft-07): every $ref inlined (the spec has
 * no recursive schemas; a cycle is an error), and `nullable: true` turned into JSON Schema. OpenAPI 3.0.3
 * says `nullable` only has an effect with a `type` beside it: there it adds "null" to the type (and to an
 * `enum`, which must list null explicitly to allow it); without `type` it is ignored.
 */
function toJsonSchema(doc, node, stack = []) {
  if (node === null || typeof node !== "object" || Array.isArray(node)) return node;
  if (node.$ref) {
    if (stack.includes(node.$ref)) throw new Error(`recursive schema ${[...stack, node.$ref].join(" -> ")}`);
    return toJsonSchema(doc, pointer(doc, node.$ref), [...stack, node.$ref]);
  }
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (OAS_ONLY.has(k)) continue;
    if (k === "properties") {
      out.properties = Object.fromEntries(Object.entries(v).map(([p, s]) => [p, toJsonSchema(doc, s, stack)]));
    } else if (["items", "additionalProperties", "not"].includes(k) && typeof v === "object") {
      out[k] = toJsonSchema(doc, v, stack);
    } else if (["allOf", "anyOf", "oneOf"].includes(k)) {
      out[k] = v.map((s) => toJsonSchema(doc, s, stack));
    } else {
      out[k] = v;
    }
  }
  if (node.nullable === true && typeof node.type === "string") {
    out.type = [node.type, "null"];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  }
  return out;
}

// ------------------------------------------------------------------ spec lookups

/** The spec path template a raw URL path matches, segment by segment (as server/http.c routes). */
function specPathFor(spec, rawPath) {
  const segs = rawPath.split("/");
  let best = null;
  let bestParams = Infinity;
  for (const tmpl of Object.keys(spec.paths)) {
    const ts = tmpl.split("/");
    if (ts.length !== segs.length) continue;
    let ok = true;
    let params = 0;
    for (let i = 0; i < ts.length && ok; i++) {
      if (/^\{[^}]+\}$/.test(ts[i])) {
        params++;
        ok = segs[i].length > 0;
      } else {
        ok = ts[i] === segs[i];
      }
    }
    if (ok && params < bestParams) {
      best = tmpl;
      bestParams = params;
    }
  }
  return best;
}

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** The spec's Response Object for (path template, method, status), or null. A 405 is answered for a method
 * the path does not have, so it is looked up among the path's operations. */
function specResponse(spec, tmpl, method, status) {
  const item = spec.paths[tmpl];
  const pick = (op) => {
    if (!op || !op.responses) return null;
    const r = op.responses[String(status)] ?? op.responses[`${String(status)[0]}XX`] ?? op.responses.default;
    return r ? deref(spec, r) : null;
  };
  const op = item[method.toLowerCase()];
  if (op) return { response: pick(op), where: `${method} ${tmpl}` };
  if (status === 405) {
    for (const m of METHODS) {
      const r = pick(item[m]);
      if (r) return { response: r, where: `${m.toUpperCase()} ${tmpl} (405 for ${method})` };
    }
  }
  return { response: null, where: `${method} ${tmpl}` };
}

function normMedia(ct) {
  return String(ct).toLowerCase().replace(/\s+/g, "");
}

/** The content entry of a Response Object for a Content-Type header: the same media type with the same
 * parameters, or a declared type without parameters (`application/json` covers `application/json; charset=utf-8`). */
function specMedia(response, contentType) {
  const content = response.content || {};
  const want = normMedia(contentType);
  for (const [k, v] of Object.entries(content)) if (normMedia(k) === want) return { key: k, media: v };
  const base = want.split(";")[0];
  for (const [k, v] of Object.entries(content)) if (normMedia(k) === base) return { key: k, media: v };
  return null;
}

// ------------------------------------------------------------------ undeclared fields

/**
 * Fields of `data` that `schema` does not declare: at each object, the names declared by the schema and
 * its allOf branches (and the anyOf/oneOf branches the data matches) are allowed; an object schema that
 * declares no properties at all (like `meta`) is free-form. Recurses into declared properties and items.
 */
function undeclared(ajv, schema, data, where, out) {
  if (data === null || typeof data !== "object" || !schema || typeof schema !== "object") return;
  const subs = [];
  const collect = (s) => {
    if (!s || typeof s !== "object") return;
    subs.push(s);
    for (const b of s.allOf || []) collect(b);
    for (const b of [...(s.anyOf || []), ...(s.oneOf || [])]) if (ajv.validate(b, data)) collect(b);
  };
  collect(schema);
  if (Array.isArray(data)) {
    for (const s of subs) if (s.items) data.forEach((el, i) => undeclared(ajv, s.items, el, `${where}/${i}`, out));
    return;
  }
  const props = {};
  const extra = [];
  let declaresAny = false;
  for (const s of subs) {
    if (s.properties) {
      declaresAny = true;
      for (const [k, v] of Object.entries(s.properties)) (props[k] ||= []).push(v);
    }
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      declaresAny = true;
      extra.push(s.additionalProperties);
    }
  }
  if (!declaresAny) return; // free-form object
  for (const [k, v] of Object.entries(data)) {
    if (props[k]) for (const s of props[k]) undeclared(ajv, s, v, `${where}/${k}`, out);
    else if (extra.length) for (const s of extra) undeclared(ajv, s, v, `${where}/${k}`, out);
    else out.push(`${where}/${k}`);
  }
}

// ------------------------------------------------------------------ HTTP

let PORT = 0;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** One request on its own connection. body: string or Buffer; chunked: send it without Content-Length. */
function request(method, urlPath, { headers = {}, body, chunked = false } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined && !chunked) h["Content-Length"] = Buffer.byteLength(body);
    let settled = false;
    const rq = http.request({ host: "127.0.0.1", port: PORT, method, path: urlPath, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        settled = true;
        resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") });
      });
      res.on("error", (e) => {
        if (!settled) reject(e);
      });
    });
    rq.setTimeout(15000, () => rq.destroy(new Error("timed out")));
    // the daemon may answer (413, 411) and close before it has read the body: the answer is what counts
    rq.on("error", (e) => {
      if (!settled) setTimeout(() => settled || reject(e), 200);
    });
    if (body !== undefined && chunked) {
      rq.write(body);
      rq.end();
    } else {
      rq.end(body);
    }
  });
}

// ------------------------------------------------------------------ the checker

const exercised = new Set(); // "METHOD /template" with a validated 2xx

function trunc(s, n = 600) {
  s = String(s);
  return s.length > n ? `${s.slice(0, n)}... (${s.length} bytes)` : s;
}

/**
 * Sends a request and checks the response against the spec. expect: the status the README gives for it;
 * code: the problem code it gives. Returns the parsed body (JSON) or the text.
 */
async function call(ctx, method, urlPath, { json, raw, headers = {}, chunked, expect, code, label } = {}) {
  const { spec, ajv, compiled } = ctx;
  const hdrs = { ...headers };
  let body = raw;
  if (json !== undefined) {
    body = JSON.stringify(json);
    if (!Object.keys(hdrs).some((k) => k.toLowerCase() === "content-type")) hdrs["Content-Type"] = "application/json";
  }
  const name = `${method} ${urlPath}${label ? ` [${label}]` : ""}`;
  let res;
  try {
    res = await request(method, urlPath, { headers: hdrs, body, chunked });
  } catch (e) {
    check(false, `${name}: no response (${e.message})`);
    return null;
  }
  const show = () =>
    `request: ${method} ${urlPath} ${JSON.stringify(hdrs)}${body !== undefined ? `\n  body: ${trunc(body)}` : ""}\n` +
    `response: ${res.status} ${res.headers["content-type"] || "(no Content-Type)"}\n  body: ${trunc(res.text)}`;
  let allOk = true;
  const c = (ok, what) => {
    allOk = check(ok, `${name}: ${what}`, ok ? null : show()) && allOk;
    return ok;
  };

  if (expect !== undefined) c(res.status === expect, `status ${res.status}, expected ${expect} (README)`);

  // X-Request-Id on every response: the client's when valid, else a fresh one
  const rid = res.headers["x-request-id"];
  const sentRid = Object.entries(hdrs).find(([k]) => k.toLowerCase() === "x-request-id")?.[1];
  c(typeof rid === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(rid), `X-Request-Id header present and well-formed (${rid})`);
  if (sentRid !== undefined) {
    const valid = /^[A-Za-z0-9._-]{1,64}$/.test(sentRid);
    c(valid ? rid === sentRid : rid !== sentRid, `X-Request-Id ${valid ? "echoes" : "replaces"} the client's "${sentRid}"`);
  }

  const rawPath = urlPath.split("?")[0];
  const tmpl = specPathFor(spec, rawPath);
  let parsed;
  const ct = res.headers["content-type"];
  const isJson = ct && /^application\/([a-z.+-]*\+)?json\b/i.test(ct);
  if (isJson) {
    try {
      parsed = JSON.parse(res.text);
    } catch (e) {
      c(false, `body is not JSON (${e.message})`);
    }
  }

  if (tmpl === null) {
    // not a documented path: only the router's 404 not_found is possible; it is a Problem
    c(res.status === 404, `undocumented path answered ${res.status}`);
    if (c(isJson && normMedia(ct).startsWith("application/problem+json"), `Content-Type ${ct} is application/problem+json`)) {
      const schema = toJsonSchema(spec, { $ref: "#/components/schemas/Problem" });
      const ok = ajv.validate(schema, parsed);
      c(ok, `body matches components/schemas/Problem${ok ? "" : `: ${ajv.errorsText(ajv.errors)}`}`);
      problemChecks(c, res, parsed, rid, code);
    }
    console.log(`${allOk ? "ok  " : "FAIL"} ${name} -> ${res.status} (no spec path: checked as a Problem)`);
    return parsed;
  }

  const { response, where } = specResponse(spec, tmpl, method, res.status);
  if (!c(response !== null, `status ${res.status} is documented for ${where}`)) {
    console.log(`FAIL ${name} -> ${res.status}`);
    return parsed ?? res.text;
  }
  // headers the response declares
  for (const h of Object.keys(response.headers || {})) c(res.headers[h.toLowerCase()] !== undefined, `header ${h} present`);

  const hasContent = response.content && Object.keys(response.content).length > 0;
  if (!hasContent) {
    c(res.text.length === 0, `no body (the spec declares none for ${where} ${res.status})`);
  } else if (c(!!ct, "has a Content-Type")) {
    const m = specMedia(response, ct);
    if (c(m !== null, `Content-Type "${ct}" is declared for ${where} ${res.status} (${Object.keys(response.content).join(", ")})`)) {
      if (isJson && parsed !== undefined && m.media.schema) {
        const key = `${where} ${res.status} ${m.key}`;
        let entry = compiled.get(key);
        if (!entry) {
          const schema = toJsonSchema(spec, m.media.schema);
          entry = { schema, validate: ajv.compile(schema) };
          compiled.set(key, entry);
        }
        const ok = entry.validate(parsed);
        c(ok, `body matches the schema of ${key}${ok ? "" : `:\n  ${ajv.errorsText(entry.validate.errors, { separator: "\n  " })}`}`);
        const extra = [];
        undeclared(ajv, entry.schema, parsed, "", extra);
        c(extra.length === 0, `body has only declared fields${extra.length ? ` (undeclared: ${extra.join(", ")})` : ""}`);
        if (res.status >= 400) problemChecks(c, res, parsed, rid, code);
        if (allOk && res.status >= 200 && res.status < 300) exercised.add(`${method} ${tmpl}`);
      } else if (!isJson) {
        if (m.media.schema?.type === "string") c(typeof res.text === "string" && res.text.length > 0, "non-empty text body");
        if (allOk && res.status >= 200 && res.status < 300) exercised.add(`${method} ${tmpl}`);
      }
    }
  }
  console.log(`${allOk ? "ok  " : "FAIL"} ${name} -> ${res.status}${parsed?.code ? ` ${parsed.code}` : ""}`);
  return parsed ?? res.text;
}

/** What the README says of every problem body, beyond its schema. */
function problemChecks(c, res, p, rid, code) {
  if (!p || typeof p !== "object") return;
  c(p.status === res.status, `problem status ${p.status} equals the HTTP status`);
  c(p.type === `urn:focald:problem:${p.code}`, `problem type "${p.type}" is urn:focald:problem:<code>`);
  c(p.request_id === rid, `problem request_id equals X-Request-Id`);
  if (code !== undefined) c(p.code === code, `problem code "${p.code}", expected "${code}" (README)`);
}

// ------------------------------------------------------------------ route table vs spec

function routeTable() {
  const src = fs.readFileSync(API_C, "utf8");
  const m = src.match(/api_routes\s*\[\s*\]\s*=\s*\{([\s\S]*?)\n\};/);
  if (!m) return null;
  const routes = [];
  for (const r of m[1].matchAll(/\{\s*"([A-Z]+)"\s*,\s*"([^"]+)"/g)) routes.push([r[1], r[2]]);
  return routes;
}

// ------------------------------------------------------------------ the daemon

async function startDaemon(tmp) {
  PORT = await freePort();
  const logPath = path.join(tmp, "focald.log");
  const log = fs.openSync(logPath, "w");
  const proc = spawn(
    FOCALD,
    ["--listen", `127.0.0.1:${PORT}`, "--db", path.join(tmp, "db", "focald.db"), "--max-body", String(MAX_BODY)],
    { stdio: ["ignore", log, log] },
  );
  const exited = new Promise((resolve) => proc.on("exit", (code, sig) => resolve({ code, sig })));
  proc.exited = exited;
  proc.logPath = logPath;
  const deadline = Date.now() + 15000;
  let dead = false;
  exited.then(() => (dead = true));
  while (Date.now() < deadline && !dead) {
    try {
      const r = await request("GET", "/readyz");
      if (r.status === 200) return proc;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log(fs.readFileSync(logPath, "utf8").slice(-3000));
  check(false, `focald did not become ready on 127.0.0.1:${PORT}`);
  if (!dead) proc.kill("SIGKILL");
  return null;
}

// ------------------------------------------------------------------ the requests

async function exercise(ctx) {
  const J = (method, p, opts) => call(ctx, method, p, opts);
  const post = (p, json, opts = {}) => J("POST", p, { json, ...opts });
  const enc = encodeURIComponent;

  // health and documents
  await J("GET", "/livez", { expect: 200 });
  await J("GET", "/readyz", { expect: 200 });
  const served = await J("GET", "/openapi.json", { expect: 200 });
  check(JSON.stringify(served) === JSON.stringify(ctx.spec), "GET /openapi.json serves server/openapi.json (rebuild if this fails)");

  // batches: class indices (softmax), with everything optional given
  const b1 = {
    run: "r1",
    batch_id: "e1-s10",
    epoch: 1,
    step: 10,
    loss: { type: "softmax_focal", gamma: 2, profile: "torchvision", reduction: "sum" },
    ids: ["img-1", 2, "img/3"],
    logits: [
      [1, 2, 3],
      [0.5, -1, 2.5],
      [0, 0, 0],
    ],
    targets: [2, 0, 1],
    meta: { "img-1": { path: "a.png", site: 3 } },
    ohem_k: 2,
  };
  let r = await post("/v1/datasets/coco/batches", b1, { expect: 200, headers: { "X-Request-Id": "trainer-7.step_10" } });
  if (r) {
    check(r.losses?.length === 3 && r.scores?.p_t?.length === 3 && r.scores?.pred?.length === 3, "batch: one loss and score per sample");
    check(r.hardest?.length === 2 && r.duplicate === false && r.batch_id === "e1-s10", "batch: hardest has ohem_k entries; batch_id echoed");
  }
  r = await post("/v1/datasets/coco/batches", b1, { expect: 200, label: "duplicate batch_id" });
  if (r) check(r.duplicate === true, "duplicate batch: duplicate is true");
  await post(
    "/v1/datasets/coco/batches",
    { ...b1, batch_id: "e1-s11", step: 11, logits: [[3, 2, 1], [2, 0, 0], [0, 4, 0]], meta: undefined },
    { expect: 200, label: "second step", headers: { "X-Request-Id": "not valid!" } },
  );
  // multi-hot rows (sigmoid focal) in another run
  await post(
    "/v1/datasets/coco/batches",
    { run: "r2", ids: ["img-1", "img-4"], logits: [[1, -2, 0.5], [-1, 2, 0]], targets: [[0, 1, 1], [1, 0, 0]] },
    { expect: 200, label: "multi-hot targets" },
  );
  // dense: N x M x C logits, per-position class indices (one sample all ignored: null scores) and dense rows
  r = await post(
    "/v1/datasets/seg/batches",
    {
      step: 5,
      epoch: 0,
      loss: { type: "softmax_focal", reduction: "mean" },
      ids: ["px-1", "px-2"],
      logits: [
        [[1, 2], [0, 1], [3, -1]],
        [[0, 0], [1, 1], [2, 2]],
      ],
      targets: [
        [1, 0, -1],
        [-1, -1, -1],
      ],
    },
    { expect: 200, label: "dense class indices" },
  );
  if (r) check(r.scores?.p_t?.[1] === null && r.scores?.pred?.[0] === null, "dense batch: all-ignored sample has null scores, dense pred is null");
  await post(
    "/v1/datasets/seg/batches",
    {
      step: 6,
      ids: ["px-1"],
      logits: [[[1, 2], [0, 1], [3, -1]]],
      targets: [[[0, 1], [1, 0.5], [0, 0]]],
    },
    { expect: 200, label: "dense rows" },
  );
  // single-output binary model: C = 1, N numbers in [0, 1]
  await post(
    "/v1/datasets/bin/batches",
    { ids: ["p", "q", 7], logits: [[1.5], [-2], [0.3]], targets: [1, 0, 0.5], ohem_k: 1 },
    { expect: 200, label: "binary C=1 targets" },
  );
  // step and epoch limits (README: step at most 2^47 - 1, epoch at most 65534)
  await post("/v1/datasets/bin/batches", { ids: ["p"], logits: [[1]], targets: [1], step: 2 ** 47 - 1, epoch: 65534 }, {
    expect: 200,
    label: "largest step and epoch",
  });

  // /v1/loss: run, batch_id, epoch, step and meta ignored; probabilities input
  r = await post(
    "/v1/loss",
    { run: "r1", batch_id: "x", epoch: 2, step: 3, meta: { a: { k: 1 } }, ids: ["a", "b"], probs: [[0.2, 0.8], [0.6, 0.4]], targets: [1, 1] },
    { expect: 200 },
  );
  if (r) check(r.dataset === null && r.run === null && r.batch_id === null && r.duplicate === false, "loss: dataset, run, batch_id null; duplicate false");

  // hard examples: every page of a k=1 query, by a descending and an ascending field, and the filters
  let cursor = null;
  let pages = 0;
  let ranks = [];
  do {
    const q = `/v1/datasets/coco/hard-examples?k=1${cursor ? `&cursor=${enc(cursor)}` : ""}`;
    r = await J("GET", q, { expect: 200, label: `page ${pages + 1}` });
    if (!r) break;
    ranks.push(...(r.items || []).map((i) => i.rank));
    cursor = r.next_cursor;
    pages++;
  } while (cursor && pages < 10);
  check(pages === 4 && JSON.stringify(ranks) === "[1,2,3,4]", `hard-examples: 4 samples over 4 pages of k=1, ranks continue (${ranks})`);
  r = await J("GET", "/v1/datasets/coco/hard-examples?by=confidence&run=r1&label=2&min_seen=1&status=open,queued&k=10", { expect: 200 });
  if (r) check(r.order === "asc" && r.run === "r1", "hard-examples by=confidence: order asc");
  await J("GET", "/v1/datasets/coco/hard-examples?by=forgetting", { expect: 200 });
  await J("GET", "/v1/datasets/seg/hard-examples?by=seen", { expect: 200 });

  // datasets and samples
  await J("GET", "/v1/datasets", { expect: 200 });
  r = await J("GET", "/v1/datasets/coco", { expect: 200 });
  if (r) check(Array.isArray(r.runs) && r.runs.length === 2, "dataset detail: runs is a list of 2");
  await J("GET", "/v1/datasets/seg", { expect: 200 });
  r = await J("GET", "/v1/datasets/coco/samples/img-1", { expect: 200 });
  if (r) check(r.runs?.length === 2 && r.runs[0].recent?.length >= 1, "sample: a run entry per run that saw it, with recent observations");
  await J("GET", "/v1/datasets/coco/samples/img-1?run=r2", { expect: 200 });
  r = await J("GET", `/v1/datasets/coco/samples/${enc("img/3")}?run=r2`, { expect: 200, label: "%2F in the id; a run that never saw it" });
  if (r) check(r.id === "img/3" && r.runs?.length === 1 && r.runs[0].seen === 0, "sample: named run that never saw it has seen 0");
  r = await J("GET", "/v1/datasets/coco/samples/2", { expect: 200, label: "integer id" });
  if (r) check(r.id === "2", "sample: integer id given as a string");
  await J("GET", "/v1/datasets/seg/samples/px-2", { expect: 200, label: "all positions ignored" });
  await J("GET", "/v1/datasets/bin/samples/p", { expect: 200 });

  // errors: 400
  await J("POST", "/v1/datasets/coco/batches", { raw: '{"ids": [', headers: { "Content-Type": "application/json" }, expect: 400, code: "bad_json" });
  await J("POST", "/v1/loss", { raw: '{"ids": [1], "ids": [2]}', headers: { "Content-Type": "application/json" }, expect: 400, code: "bad_json", label: "duplicate keys" });
  await J("GET", "/v1/datasets/coco/hard-examples?k=0", { expect: 400, code: "bad_query" });
  await J("GET", "/v1/datasets/coco/hard-examples?by=loss", { expect: 400, code: "bad_query" });
  r = await J("GET", "/v1/datasets/coco/hard-examples?k=1&by=max_loss", { expect: 200 });
  if (r?.next_cursor)
    await J("GET", `/v1/datasets/coco/hard-examples?k=1&by=aum&cursor=${enc(r.next_cursor)}`, { expect: 400, code: "bad_query", label: "another query's cursor" });
  // 404
  await J("GET", "/v2/nothing", { expect: 404, code: "not_found" });
  await J("GET", "/v1/datasets/nope", { expect: 404, code: "dataset_not_found" });
  await J("GET", "/v1/datasets/nope/hard-examples", { expect: 404, code: "dataset_not_found" });
  await J("GET", "/v1/datasets/coco/hard-examples?run=r9", { expect: 404, code: "run_not_found" });
  await J("GET", "/v1/datasets/coco/samples/nope", { expect: 404, code: "sample_not_found" });
  await J("GET", "/v1/datasets/coco/samples/img-1?run=r9", { expect: 404, code: "run_not_found" });
  await J("GET", "/v1/datasets/nope/samples/img-1", { expect: 404, code: "dataset_not_found" });
  await J("DELETE", "/v1/datasets/nope", { expect: 404, code: "dataset_not_found" });
  // 405
  await J("PUT", "/livez", { expect: 405, code: "method_not_allowed" });
  await J("GET", "/v1/loss", { expect: 405, code: "method_not_allowed" });
  await J("POST", "/v1/datasets/coco", { json: {}, expect: 405, code: "method_not_allowed" });
  // 409
  await post("/v1/datasets/coco/batches", { run: "r1", ids: ["img-1"], logits: [[1, 2]], targets: [0] }, { expect: 409, code: "class_count_conflict" });
  // 411: a binary body without Content-Length
  await J("POST", "/v1/datasets/coco/batches", { raw: Buffer.alloc(64), chunked: true, headers: { "Content-Type": "application/octet-stream" }, expect: 411, code: "length_required" });
  // 413: over --max-body, from Content-Length
  await J("POST", "/v1/loss", { raw: " ".repeat(MAX_BODY + 100), headers: { "Content-Type": "application/json" }, expect: 413, code: "body_too_large" });
  await J("POST", "/v1/datasets/coco/batches", { raw: " ".repeat(MAX_BODY + 1), headers: { "Content-Type": "application/json" }, expect: 413, code: "body_too_large" });
  // 415
  await J("POST", "/v1/loss", { raw: "{}", headers: { "Content-Type": "text/plain" }, expect: 415, code: "unsupported_media_type" });
  await J("POST", "/v1/datasets/coco/batches", { raw: "{}", expect: 415, code: "unsupported_media_type", label: "no Content-Type" });
  // 422
  const ok1 = { ids: ["a"], logits: [[1, 2]], targets: [1] };
  await post("/v1/loss", [1, 2], { expect: 422, code: "invalid_field", label: "not an object" });
  await post("/v1/loss", { ids: ["a"], logits: [[1, 2]] }, { expect: 422, code: "missing_field" });
  await post("/v1/loss", { ...ok1, colour: "red" }, { expect: 422, code: "unknown_field" });
  await post("/v1/datasets/b@d/batches", ok1, { expect: 422, code: "bad_name", label: "dataset name" });
  await post("/v1/datasets/coco/batches", { ...ok1, run: "no spaces" }, { expect: 422, code: "bad_name", label: "run name" });
  await post("/v1/loss", { ids: ["a", "b"], logits: [[1, 2]], targets: [1, 0] }, { expect: 422, code: "shape_mismatch" });
  await post("/v1/loss", { ids: ["a"], logits: [[1, 1e39]], targets: [1] }, { expect: 422, code: "out_of_range", label: "beyond float32" });
  await post("/v1/loss", { ids: ["a"], probs: [[0.5, 1.5]], targets: [1] }, { expect: 422, code: "out_of_range", label: "probability > 1" });
  await post("/v1/loss", { ids: ["a"], logits: [[1, 2]], targets: [5], loss: { type: "softmax_focal" } }, { expect: 422, code: "label_out_of_range" });
  await post("/v1/loss", { ids: [7, "7"], logits: [[1, 2], [2, 1]], targets: [0, 1] }, { expect: 422, code: "duplicate_id" });
  await post("/v1/loss", { ...ok1, loss: { gamma: -1 } }, { expect: 422, code: "invalid_loss" });
  await post("/v1/datasets/bin/batches", { ids: ["p"], logits: [[1]], targets: [1], step: 2 ** 47 }, { expect: 422, code: "out_of_range", label: "step 2^47" });
  await post("/v1/datasets/bin/batches", { ids: ["p"], logits: [[1]], targets: [1], epoch: 65535 }, { expect: 422, code: "out_of_range", label: "epoch 65535" });

  // delete, then it is gone
  r = await J("DELETE", "/v1/datasets/bin", { expect: 200 });
  if (r) check(r.deleted === "bin" && r.samples === 3 && r.observations === 4, `delete: answers what was removed (${JSON.stringify(r)})`);
  await J("GET", "/v1/datasets/bin", { expect: 404, code: "dataset_not_found", label: "after delete" });

  // metrics last, so that it has counted the requests above
  const m = await J("GET", "/metrics", { expect: 200 });
  if (typeof m === "string")
    check(/^focald_build_info\{/m.test(m) && /^focald_http_requests_total\{/m.test(m), "metrics: focald_build_info and focald_http_requests_total present");
}

// ------------------------------------------------------------------ main

async function main() {
  const { Ajv, addFormats } = loadTools();
  const spec = JSON.parse(fs.readFileSync(SPEC_FILE, "utf8"));
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  const ctx = { spec, ajv, compiled: new Map() };

  // the nullable conversion, on the patterns the spec uses
  const conv = (s) => ajv.compile(toJsonSchema(spec, s));
  check(conv({ type: "integer", nullable: true })(null) && !conv({ type: "integer" })(null), "nullable: null passes only with nullable: true");
  check(conv({ type: "string", nullable: true, enum: [null] })(null) && !conv({ type: "string", nullable: true, enum: [null] })("x"), "nullable with enum [null]: only null");
  check(!conv({ type: "string", nullable: true, enum: ["a"] })("b") && conv({ type: "string", nullable: true, enum: ["a"] })(null), "nullable with an enum: null added to it");

  // every schema in the spec converts and compiles
  for (const name of Object.keys(spec.components?.schemas || {})) {
    let ok = true;
    let err;
    try {
      ajv.compile(toJsonSchema(spec, { $ref: `#/components/schemas/${name}` }));
    } catch (e) {
      ok = false;
      err = e.message;
    }
    check(ok, `components/schemas/${name} compiles as JSON Schema`, err);
  }

  // the route table and the spec's operations are the same set
  const routes = routeTable();
  if (!check(routes !== null && routes.length > 0, "server/api.c has an api_routes[] table")) finish(1);
  const ops = [];
  for (const [p, item] of Object.entries(spec.paths)) for (const m of METHODS) if (item[m]) ops.push(`${m.toUpperCase()} ${p}`);
  for (const [m, p] of routes) check(ops.includes(`${m} ${p}`), `route ${m} ${p} (server/api.c) is in the spec's paths`);
  for (const o of ops) check(routes.some(([m, p]) => `${m} ${p}` === o), `spec operation ${o} is a route of server/api.c`);

  if (!check(fs.existsSync(FOCALD), `${FOCALD} exists (run make first)`)) finish(1);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "focald-openapi-"));
  const proc = await startDaemon(tmp);
  let keep = false;
  if (proc) {
    try {
      await exercise(ctx);
    } catch (e) {
      check(false, `exercise threw: ${e.stack || e}`);
    }
    for (const [m, p] of routes) check(exercised.has(`${m} ${p}`), `route ${m} ${p} answered a 2xx that matched the spec`);
    proc.kill("SIGTERM");
    const exit = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r(null), 15000))]);
    if (!exit) proc.kill("SIGKILL");
    check(exit && exit.code === 0, `focald exits 0 on SIGTERM (${JSON.stringify(exit)})`);
    if (failed) {
      keep = true;
      console.log(`\nfocald's log (kept in ${tmp}), last lines:`);
      console.log(fs.readFileSync(proc.logPath, "utf8").split("\n").slice(-40).join("\n"));
    }
  }
  if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
  finish();
}

main().catch((e) => {
  check(false, `unexpected error: ${e.stack || e}`);
  finish(1);
});
