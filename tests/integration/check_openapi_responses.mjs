#!/usr/bin/env node
// Checks focald's live responses against server/openapi.json.
//
// usage: BUILD=build node tests/integration/check_openapi_responses.mjs
//
// Starts $BUILD/focald (default build/focald) on a free loopback port with a temporary database,
// --max-body 4096 and --media-root (a directory of one image), exercises every route (batches with class-index, multi-hot, dense and single-output
// binary targets; /v1/loss; hard-examples with a cursor; the dataset and sample endpoints; the review loop:
// review decisions and the audit trail, sample meta, the relabel feed, queues and every export format;
// livez, readyz, metrics, openapi.json), binary tensor requests and responses (README "Binary tensors") and
// a set of error responses, and checks each response against what the spec declares for its path, method
// and status: the status is documented, the Content-Type is one the response declares, the headers it
// declares as required are present and every declared header present matches its schema, and a JSON
// body validates against the response's schema ($refs resolved, OpenAPI 3.0's `nullable` turned into
// JSON Schema) and has no field the schema does not declare. A JSON Lines (application/x-ndjson) body is
// checked the same way line by line, its schema describing one line; each export must also have its
// format's documented shape (its components/schemas entry; for CSV, the header row of the spec's example)
// and list what hard-examples lists, in the same order. A binary (application/octet-stream) response
// must carry Inference-Header-Content-Length, and its JSON header and outputs must add up to the body.
// Each request's Content-Type must be one the operation's requestBody declares, and each header it sends
// that the spec knows as a parameter (Inference-Header-Content-Length) must be declared for the operation. It also checks that the routes of server/api.c's `api_routes[]` and the
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

/** The spec path template a raw URL path matches, segment by segment (as server/http_serve.c routes). */
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
 * declares no properties at all is free-form, and `additionalProperties: true` allows any other name beside
 * the declared ones (a sample's `meta`). Recurses into declared properties and items.
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
    if (s.additionalProperties === true) {
      declaresAny = true;
      extra.push({});
    } else if (s.additionalProperties && typeof s.additionalProperties === "object") {
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
        const buf = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, buf, text: buf.toString("utf8") });
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
  if (Buffer.isBuffer(s)) s = `(${s.length} bytes) ${JSON.stringify(s.subarray(0, n).toString("latin1"))}`;
  s = String(s);
  return s.length > n ? `${s.slice(0, n)}... (${s.length} bytes)` : s;
}

/** The compiled validator of a spec schema, cached under key. */
function validatorFor(ctx, key, specSchema) {
  let entry = ctx.compiled.get(key);
  if (!entry) {
    const schema = toJsonSchema(ctx.spec, specSchema);
    entry = { schema, validate: ctx.ajv.compile(schema) };
    ctx.compiled.set(key, entry);
  }
  return entry;
}

/**
 * Sends a request and checks the response against the spec. expect: the status the README gives for it;
 * code: the problem code it gives; want: {header: RegExp} for response headers the caller expects beyond
 * the spec's (an export's Content-Type for its format). Returns the parsed body (JSON; for JSON Lines, the
 * array of lines) or the text.
 */
async function call(ctx, method, urlPath, { json, raw, headers = {}, chunked, expect, code, field, label, want = {} } = {}) {
  const { spec, ajv } = ctx;
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
    `response: ${res.status} ${res.headers["content-type"] || "(no Content-Type)"}` +
    `${res.headers["inference-header-content-length"] !== undefined ? ` Inference-Header-Content-Length: ${res.headers["inference-header-content-length"]}` : ""}` +
    `\n  body: ${trunc(isOctet(res.headers["content-type"]) ? res.buf : res.text)}`;
  let allOk = true;
  const c = (ok, what) => {
    allOk = check(ok, `${name}: ${what}`, ok ? null : show()) && allOk;
    return ok;
  };

  if (expect !== undefined) c(res.status === expect, `status ${res.status}, expected ${expect} (README)`);
  for (const [h, re] of Object.entries(want)) c(re.test(res.headers[h.toLowerCase()] ?? ""), `header ${h} ${JSON.stringify(res.headers[h.toLowerCase()])} matches ${re}`);

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
      problemChecks(c, res, parsed, rid, code, field);
    }
    console.log(`${allOk ? "ok  " : "FAIL"} ${name} -> ${res.status} (no spec path: checked as a Problem)`);
    return parsed;
  }

  requestChecks(c, spec, tmpl, method, hdrs, body);

  const { response, where } = specResponse(spec, tmpl, method, res.status);
  if (!c(response !== null, `status ${res.status} is documented for ${where}`)) {
    console.log(`FAIL ${name} -> ${res.status}`);
    return parsed ?? res.text;
  }
  // headers the response declares
  for (const [h, ref] of Object.entries(response.headers || {})) {
    const decl = deref(spec, ref);
    const value = res.headers[h.toLowerCase()];
    if (decl.required) c(value !== undefined, `header ${h} present (required)`);
    if (value !== undefined && decl.schema) {
      const why = headerValueProblem(toJsonSchema(spec, decl.schema), value);
      c(why === null, `header ${h}: ${JSON.stringify(value)} matches its schema${why ? ` (${why})` : ""}`);
    }
  }
  for (const h of ["inference-header-content-length"])
    if (res.headers[h] !== undefined) c(Object.keys(response.headers || {}).some((k) => k.toLowerCase() === h), `header ${h} is declared for ${where} ${res.status}`);

  const hasContent = response.content && Object.keys(response.content).length > 0;
  if (!hasContent) {
    c(res.text.length === 0, `no body (the spec declares none for ${where} ${res.status})`);
    // a redirect (GET /ui) is that route's answer: its declared headers were checked above
    if (allOk && res.status >= 300 && res.status < 400 && res.status !== 304) exercised.add(`${method} ${tmpl}`);
  } else if (c(!!ct, "has a Content-Type")) {
    const m = specMedia(response, ct);
    if (c(m !== null, `Content-Type "${ct}" is declared for ${where} ${res.status} (${Object.keys(response.content).join(", ")})`)) {
      if (isJson && parsed !== undefined && m.media.schema) {
        const key = `${where} ${res.status} ${m.key}`;
        const entry = validatorFor(ctx, key, m.media.schema);
        const ok = entry.validate(parsed);
        c(ok, `body matches the schema of ${key}${ok ? "" : `:\n  ${ajv.errorsText(entry.validate.errors, { separator: "\n  " })}`}`);
        const extra = [];
        undeclared(ajv, entry.schema, parsed, "", extra);
        c(extra.length === 0, `body has only declared fields${extra.length ? ` (undeclared: ${extra.join(", ")})` : ""}`);
        if (res.status >= 400) problemChecks(c, res, parsed, rid, code, field);
        if (allOk && res.status >= 200 && res.status < 300) exercised.add(`${method} ${tmpl}`);
      } else if (isOctet(ct)) {
        const sch = m.media.schema ? toJsonSchema(spec, m.media.schema) : {};
        c(sch.type === "string" && sch.format === "binary", `${m.key} is declared as a binary string`);
        parsed = binaryChecks(c, res);
        if (allOk && res.status >= 200 && res.status < 300) exercised.add(`${method} ${tmpl}`);
      } else if (isJsonLines(ct) && m.media.schema) {
        // the schema describes one line
        const key = `${where} ${res.status} ${m.key}`;
        parsed = jsonLinesChecks(c, ajv, validatorFor(ctx, key, m.media.schema), key, res.text);
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

function isOctet(ct) {
  return !!ct && normMedia(ct).split(";")[0] === "application/octet-stream";
}

function isJsonLines(ct) {
  return !!ct && ["application/x-ndjson", "application/jsonl"].includes(normMedia(ct).split(";")[0]);
}

/** A JSON Lines body: each line ends with a line feed, parses as JSON, matches the line schema and has only
 * the fields it declares. Returns the parsed lines. */
function jsonLinesChecks(c, ajv, entry, key, text) {
  c(text.length === 0 || text.endsWith("\n"), "JSON Lines body ends with a line feed");
  const lines = [];
  const bad = [];
  const extra = [];
  text
    .split("\n")
    .slice(0, -1)
    .forEach((line, i) => {
      let v;
      try {
        v = JSON.parse(line);
      } catch (e) {
        bad.push(`line ${i + 1} is not JSON (${e.message})`);
        return;
      }
      lines.push(v);
      if (!entry.validate(v)) bad.push(`line ${i + 1}: ${ajv.errorsText(entry.validate.errors)}`);
      undeclared(ajv, entry.schema, v, `line ${i + 1}`, extra);
    });
  c(bad.length === 0, `every line parses and matches the schema of ${key}${bad.length ? `:\n  ${bad.slice(0, 5).join("\n  ")}` : ""}`);
  c(extra.length === 0, `every line has only declared fields${extra.length ? ` (undeclared: ${extra.slice(0, 10).join(", ")})` : ""}`);
  return lines;
}

/** Why a header's value does not match its (simple) schema, or null. */
function headerValueProblem(schema, value) {
  if (schema.type === "integer") {
    if (!/^-?[0-9]+$/.test(value)) return "not an integer";
    if (schema.minimum !== undefined && Number(value) < schema.minimum) return `below ${schema.minimum}`;
  }
  if (schema.type === "string" && schema.pattern && !new RegExp(schema.pattern).test(value)) return `does not match ${schema.pattern}`;
  return null;
}

/** The request against its operation: its Content-Type is declared by the requestBody, and the headers it sends
 * that are parameters of some operation in the spec are parameters of this one. */
function requestChecks(c, spec, tmpl, method, hdrs, body) {
  const item = tmpl && spec.paths[tmpl];
  const op = item && item[method.toLowerCase()];
  if (!op) return;
  const ct = Object.entries(hdrs).find(([k]) => k.toLowerCase() === "content-type")?.[1];
  const rb = op.requestBody && deref(spec, op.requestBody);
  if (body !== undefined && ct !== undefined && rb && /^application\/(json|octet-stream)\b/i.test(ct))
    c(specMedia(rb, ct) !== null, `request Content-Type "${ct}" is declared by ${method} ${tmpl}'s requestBody`);
  const params = [...(item.parameters || []), ...(op.parameters || [])].map((p) => deref(spec, p));
  const known = new Set(
    Object.values(spec.components?.parameters || {})
      .filter((p) => p.in === "header")
      .map((p) => p.name.toLowerCase()),
  );
  for (const k of Object.keys(hdrs)) {
    if (!known.has(k.toLowerCase())) continue;
    c(params.some((p) => p.in === "header" && p.name.toLowerCase() === k.toLowerCase()), `request header ${k} is a parameter of ${method} ${tmpl}`);
  }
}

const BINARY_OUTPUTS = ["losses", "p_t", "p_max", "margin", "norm_margin", "entropy", "cw_entropy", "el2n", "correct", "pred"];

/** A binary response (README "Binary tensors"): Inference-Header-Content-Length, a JSON header with dataset, run,
 * accepted, duplicate, loss, hardest and outputs, then the outputs' bytes in order. Returns {header, outputs}. */
function binaryChecks(c, res) {
  const hl = res.headers["inference-header-content-length"];
  if (!c(hl !== undefined && /^[0-9]+$/.test(hl), `binary response has Inference-Header-Content-Length (${hl})`)) return undefined;
  const n = Number(hl);
  if (!c(n <= res.buf.length, `Inference-Header-Content-Length ${n} within the ${res.buf.length}-byte body`)) return undefined;
  let header;
  try {
    header = JSON.parse(res.buf.subarray(0, n).toString("utf8"));
  } catch (e) {
    c(false, `binary response header is JSON (${e.message})`);
    return undefined;
  }
  const keys = ["dataset", "run", "accepted", "duplicate", "loss", "hardest", "outputs"];
  c(JSON.stringify(Object.keys(header).sort()) === JSON.stringify([...keys].sort()), `binary header has exactly ${keys.join(", ")} (${Object.keys(header)})`);
  c(Number.isInteger(header.accepted) && header.accepted > 0, "binary header: accepted is a positive integer");
  c(typeof header.duplicate === "boolean" && Array.isArray(header.hardest) && (header.loss === null || typeof header.loss === "number"), "binary header: duplicate, hardest and loss typed");
  const outputs = {};
  let off = n;
  let order = -1;
  for (const o of Array.isArray(header.outputs) ? header.outputs : []) {
    const k = BINARY_OUTPUTS.indexOf(o?.name);
    c(k > order, `output ${o?.name} is a known output, in the documented order`);
    order = k;
    const dt = o?.name === "pred" ? "INT32" : "FP32";
    const size = o?.parameters?.binary_data_size;
    c(o?.datatype === dt && JSON.stringify(o?.shape) === JSON.stringify([header.accepted]) && size === 4 * header.accepted,
      `output ${o?.name}: ${dt}, shape [N], binary_data_size 4 N (${JSON.stringify(o)})`);
    if (!Number.isInteger(size) || off + size > res.buf.length) {
      c(false, `output ${o?.name}'s ${size} bytes lie within the body`);
      return { header, outputs };
    }
    const bytes = res.buf.subarray(off, off + size);
    outputs[o.name] = Array.from({ length: size / 4 }, (_, i) => (dt === "INT32" ? bytes.readInt32LE(4 * i) : bytes.readFloatLE(4 * i)));
    off += size;
  }
  c(Array.isArray(header.outputs) && header.outputs.length > 0, "binary header lists its outputs");
  c(off === res.buf.length, `the outputs take the rest of the body (${off - n} bytes after the header, body ${res.buf.length - n})`);
  return { header, outputs };
}

/** A binary tensor body: a JSON header (fields plus `inputs` from the tensors), then each tensor's bytes. A tensor
 * is {name, datatype, shape, data: Buffer, size?: its declared binary_data_size}. */
function binaryBody(fields, tensors) {
  const inputs = tensors.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, parameters: { binary_data_size: t.size ?? t.data.length } }));
  const head = Buffer.from(JSON.stringify({ ...fields, inputs }), "utf8");
  return { body: Buffer.concat([head, ...tensors.map((t) => t.data)]), headerLength: head.length };
}

const le = {
  i64: (v) => {
    const b = Buffer.alloc(8 * v.length);
    v.forEach((x, i) => b.writeBigInt64LE(BigInt(x), 8 * i));
    return b;
  },
  f32: (v) => {
    const b = Buffer.alloc(4 * v.length);
    v.forEach((x, i) => b.writeFloatLE(x, 4 * i));
    return b;
  },
  u8: (v) => Buffer.from(v),
  bytes: (v) =>
    Buffer.concat(
      v.flatMap((s) => {
        const b = Buffer.from(s, "utf8");
        const l = Buffer.alloc(4);
        l.writeUInt32LE(b.length);
        return [l, b];
      }),
    ),
};

/** What the README says of every problem body, beyond its schema. */
function problemChecks(c, res, p, rid, code, field) {
  if (!p || typeof p !== "object") return;
  if (field !== undefined) c(p.field === (field ?? undefined), `problem field ${JSON.stringify(p.field)}, expected ${JSON.stringify(field)}`);
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

// A directory of one image, for the local preview route: a 1 x 1 PNG.
function mediaRoot(tmp) {
  const dir = path.join(tmp, "media");
  fs.mkdirSync(dir, { recursive: true });
  const png = "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478da63f8cfc000000301010018dd8db00000000049454e44ae426082";
  fs.writeFileSync(path.join(dir, "pic.png"), Buffer.from(png, "hex"));
  return dir;
}

async function startDaemon(tmp) {
  PORT = await freePort();
  const logPath = path.join(tmp, "focald.log");
  const log = fs.openSync(logPath, "w");
  const proc = spawn(
    FOCALD,
    ["--listen", `127.0.0.1:${PORT}`, "--db", path.join(tmp, "db", "focald.db"), "--max-body", String(MAX_BODY),
      "--media-root", mediaRoot(tmp)],
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
  // outputs grad and grad_norm: this route only
  r = await post("/v1/loss", { ids: ["a", "b"], logits: [[[0, 1], [2, -1]], [[0.5, 0], [1, 1]]], targets: [[1, 0], [0, 1]], outputs: ["grad", { name: "grad_norm" }] }, { expect: 200, label: "loss with outputs grad and grad_norm" });
  if (r) check(Array.isArray(r.grad) && r.grad.length === 2 && r.grad[0].length === 2 && r.grad[0][0].length === 2 && r.grad_norm.length === 2, "loss: grad nested as the input, grad_norm per sample");
  await post("/v1/datasets/coco/batches", { ids: ["a"], logits: [[0, 1]], targets: [1], outputs: ["grad"] }, { expect: 422, code: "invalid_field", field: "/outputs/0", label: "batches refuse grad" });
  // loss.pos_weight: the sigmoid family's
  await post("/v1/loss", { ids: ["a"], logits: [[0, 1]], targets: [[1, 0]], loss: { type: "binary_cross_entropy", pos_weight: [2, 0.5] } }, { expect: 200, label: "pos_weight per class" });
  await post("/v1/loss", { ids: ["a"], logits: [[0, 1]], targets: [1], loss: { type: "softmax_focal", pos_weight: 2 } }, { expect: 422, code: "invalid_loss", field: "/loss/pos_weight", label: "softmax refuses pos_weight" });

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

  // binary tensors (README "Binary tensors"): the README's worked example, answered in JSON
  const B = (p, fields, tensors, { headers = {}, ihcl, ...opts } = {}) => {
    const { body, headerLength } = binaryBody(fields, tensors);
    const h = { "Content-Type": "application/octet-stream", ...headers };
    if (ihcl !== null) h["Inference-Header-Content-Length"] = String(ihcl ?? headerLength);
    return J("POST", p, { raw: body, headers: h, ...opts });
  };
  const ex = () => [
    { name: "ids", datatype: "INT64", shape: [2], data: le.i64([7, 8]) },
    { name: "logits", datatype: "FP32", shape: [2, 3], data: le.f32([0, 1, 2, 2, -1, 0.5]) },
    { name: "targets", datatype: "UINT8", shape: [2], data: le.u8([2, 0]) },
  ];
  const { body: exBody, headerLength: exLen } = binaryBody({ run: "r1" }, ex());
  check(exLen === 279 && exBody.length === 321, `binary: the README's example header is 279 bytes, the body 321 (${exLen}, ${exBody.length})`);
  const exJson = await B("/v1/datasets/tensors/batches", { run: "r1" }, ex(), { expect: 200, label: "binary body, JSON response" });
  if (exJson) check(exJson.dataset === "tensors" && exJson.run === "r1" && exJson.losses?.length === 2, "binary body, JSON response: a BatchResponse for 2 samples");
  // binary responses: Accept, parameters.binary_data_output, a chosen outputs list
  const bin1 = await B("/v1/datasets/tensors/batches", { run: "r2", batch_id: "t1", ohem_k: 1 }, [
    { name: "ids", datatype: "BYTES", shape: [3], data: le.bytes(["a", "b/c", "é"]) },
    { name: "logits", datatype: "FP32", shape: [3, 3], data: le.f32([0, 1, 2, 2, -1, 0.5, 1, 1, 1]) },
    { name: "targets", datatype: "INT64", shape: [3], data: le.i64([2, 0, -1]) },
  ], { headers: { Accept: "application/octet-stream" }, expect: 200, label: "Accept: application/octet-stream" });
  if (bin1?.header) {
    const o = bin1.outputs;
    check(bin1.header.dataset === "tensors" && bin1.header.run === "r2" && bin1.header.accepted === 3 && bin1.header.hardest?.length === 1,
      `binary response: dataset, run, accepted, hardest (${JSON.stringify(bin1.header)})`);
    check(bin1.header.outputs?.length === 10 && Number.isNaN(o.p_t?.[2]) && o.pred?.[2] === -1 && o.pred?.[0] === 2,
      `binary response: all 10 outputs; NaN and -1 for the ignored sample (${JSON.stringify(o)})`);
  }
  const lossFields = { outputs: [{ name: "losses" }, { name: "pred" }], parameters: { binary_data_output: true } };
  const bin2 = await B("/v1/loss", lossFields, ex(), { expect: 200, label: "binary_data_output, outputs losses and pred" });
  const json2 = await post("/v1/loss", { ids: [7, 8], logits: [[0, 1, 2], [2, -1, 0.5]], targets: [2, 0] }, { expect: 200, label: "the same batch as JSON" });
  if (bin2?.header && json2?.losses) {
    check(JSON.stringify(bin2.header.outputs?.map((x) => x.name)) === '["losses","pred"]' && bin2.header.dataset === null && bin2.header.run === null,
      `binary /v1/loss: the chosen outputs, dataset and run null (${JSON.stringify(bin2.header)})`);
    check(JSON.stringify(bin2.outputs.losses) === JSON.stringify(json2.losses.map((v) => Math.fround(v))) && JSON.stringify(bin2.outputs.pred) === JSON.stringify(json2.scores.pred),
      `binary /v1/loss: the same losses and pred as JSON (${JSON.stringify(bin2.outputs)} vs ${JSON.stringify(json2.losses)} ${JSON.stringify(json2.scores?.pred)})`);
  }
  await B("/v1/loss", { outputs: [{ name: "el2n", parameters: { binary_data: true } }] }, ex(), { expect: 200, label: "binary_data on an output" });
  // binary errors
  await B("/v1/datasets/tensors/batches", { run: "r1" }, ex(), { ihcl: null, expect: 400, code: "bad_framing", field: null, label: "no Inference-Header-Content-Length" });
  await B("/v1/loss", {}, ex(), { ihcl: 10000, expect: 400, code: "bad_framing", field: null, label: "header length beyond the body" });
  const exBad = ex();
  exBad[1].size = 28;
  await B("/v1/datasets/tensors/batches", { run: "r1" }, exBad, { expect: 400, code: "bad_framing", field: "/inputs/1/parameters/binary_data_size", label: "binary_data_size is not shape x datatype" });
  const exLong = ex();
  exLong[2].size = exLong[2].data.length;
  exLong[2].data = Buffer.concat([exLong[2].data, Buffer.alloc(6)]);
  await B("/v1/loss", {}, exLong, { expect: 400, code: "bad_framing", field: "/inputs", label: "bytes after the tensors", headers: { Accept: "application/octet-stream" } });
  await J("POST", "/v1/loss", { raw: Buffer.concat([Buffer.from("{nope"), exBody.subarray(5)]), headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(exLen) }, expect: 400, code: "bad_json", label: "binary header not JSON" });
  const exType = ex();
  exType[1].datatype = "FP8";
  await B("/v1/loss", {}, exType, { expect: 422, code: "invalid_field", field: "/inputs/1/datatype", label: "unknown datatype" });
  const exName = ex();
  exName[2].name = "labels";
  await B("/v1/datasets/tensors/batches", {}, exName, { expect: 422, code: "unknown_field", field: "/inputs/2/name", label: "unknown tensor name" });
  await B("/v1/loss", {}, [ex()[0], { name: "logits", datatype: "FP32", shape: [3, 3], data: le.f32(Array(9).fill(0)) }, ex()[2]], {
    expect: 422,
    code: "shape_mismatch",
    field: "/inputs/1/shape",
    label: "ids [2], logits [3, 3]",
  });
  await J("POST", "/v1/datasets/tensors/batches", { raw: exBody, chunked: true, headers: { "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(exLen) }, expect: 411, code: "length_required", label: "binary, chunked" });
  await B("/v1/loss", {}, [ex()[0], { name: "logits", datatype: "FP32", shape: [2, 600], data: le.f32(Array(1200).fill(0)) }, ex()[2]], {
    expect: 413,
    code: "body_too_large",
    label: "binary over --max-body",
  });
  r = await J("GET", "/v1/datasets/tensors", { expect: 200, label: "after the binary batches" });
  if (r) check(r.samples === 5 && r.observations === 5, `binary: two batches of 2 and 3 samples stored, the rejected ones not (${JSON.stringify(r)})`);

  await exerciseReview(ctx);
  await exerciseIdempotency(ctx);

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
  // a body is refused by its length before the route is looked at: 413 on every route, those that take no body too
  for (const [m, p] of [["GET", "/v1/datasets"], ["DELETE", "/v1/datasets/coco"], ["GET", "/livez"], ["GET", "/metrics"]])
    await J(m, p, { raw: " ".repeat(MAX_BODY + 1), expect: 413, code: "body_too_large", label: `${m} ${p} with a body over --max-body` });
  // 415
  await J("POST", "/v1/loss", { raw: "{}", headers: { "Content-Type": "text/plain" }, expect: 415, code: "unsupported_media_type" });
  await J("POST", "/v1/datasets/coco/batches", { raw: "{}", expect: 415, code: "unsupported_media_type", label: "no Content-Type" });
  await J("POST", "/v1/datasets/coco/batches", { raw: "{}", headers: { "Content-Type": "application/json; charset=latin1" }, expect: 415, code: "unsupported_media_type", label: "JSON in latin1" });
  await J("POST", "/v1/loss", { raw: "{}", headers: { "Content-Type": "application/octet-stream; charset=latin1" }, expect: 415, code: "unsupported_media_type", label: "binary with a latin1 charset" });
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

  // the data map: the grid, points when few, its errors
  r = await J("GET", "/v1/datasets/coco/datamap?run=r1&bins=4&limit=100", { expect: 200 });
  if (r) check(r.counts?.length === 16 && r.correctness?.length === 16 && Array.isArray(r.points) && r.points.length === r.total, `datamap: 4 x 4 cells, the points listed (${r?.total})`);
  r = await J("GET", "/v1/datasets/coco/datamap?bins=2&x0=0&x1=1&y0=0&y1=1&limit=0&min_seen=1", { expect: 200, label: "no points" });
  if (r) check(r.total > 0 && r.points === null, "datamap: more samples than the limit gives points null");
  await J("GET", "/v1/datasets/coco/datamap?bins=0", { expect: 400, code: "bad_query", field: "bins" });
  await J("GET", "/v1/datasets/coco/datamap?x0=1&x1=0.5", { expect: 400, code: "bad_query", field: "x1" });
  await J("GET", "/v1/datasets/coco/datamap?run=r9", { expect: 404, code: "run_not_found" });
  await J("GET", "/v1/datasets/nope/datamap", { expect: 404, code: "dataset_not_found" });

  // a sample's local image under --media-root
  await post("/v1/datasets/media/batches", { ids: ["p", "q"], logits: [[0, 1], [1, 0]], targets: [1, 0], meta: { p: { uri: "pic.png" }, q: { uri: "../pic.png" } } }, { expect: 200 });
  await J("GET", "/v1/datasets/media/samples/p/media", { expect: 200, want: { "Content-Type": /^image\/png$/ } });
  await J("GET", "/v1/datasets/media/samples/q/media", { expect: 404, code: "not_found", label: "outside the root" });
  await J("GET", "/v1/datasets/media/sample/media?id=p", { expect: 200, want: { "Content-Type": /^image\/png$/ } });
  await J("GET", "/v1/datasets/media/sample/media?id=q", { expect: 404, code: "not_found", label: "outside the root, id in the query" });
  await J("GET", "/v1/datasets/media/sample/media?id=nope", { expect: 404, code: "sample_not_found" });

  // the console's files
  await J("GET", "/ui", { expect: 308, want: { Location: /^\/ui\/$/ } });
  r = await J("GET", "/ui/", { expect: 200, want: { "Content-Security-Policy": /script-src 'self'/, "X-Content-Type-Options": /^nosniff$/ } });
  await J("GET", "/ui/console.js", { expect: 200, want: { "Content-Type": /^text\/javascript/ } });
  const css = await request("GET", "/ui/console.css");
  await J("GET", "/ui/console.css", { expect: 304, headers: { "If-None-Match": css.headers.etag }, label: "unchanged" });
  await J("GET", "/ui/nope.js", { expect: 404, code: "not_found" });

  // delete, then it is gone
  r = await J("DELETE", "/v1/datasets/bin", { expect: 200 });
  if (r) check(r.deleted === "bin" && r.samples === 3 && r.observations === 4, `delete: answers what was removed (${JSON.stringify(r)})`);
  await J("GET", "/v1/datasets/bin", { expect: 404, code: "dataset_not_found", label: "after delete" });

  // metrics last, so that it has counted the requests above
  const m = await J("GET", "/metrics", { expect: 200 });
  if (typeof m === "string")
    check(/^focald_build_info\{/m.test(m) && /^focald_http_requests_total\{/m.test(m), "metrics: focald_build_info and focald_http_requests_total present");
}

// ------------------------------------------------------------------ the review loop

/** RFC 4180 records (CRLF line ends, quoted cells with "" for a quote) as arrays of cells. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        cell += ch;
      }
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === ",") {
      row.push(cell);
      cell = "";
    } else if (ch === "\r" && text[i + 1] === "\n") {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
      i++;
    } else {
      cell += ch;
    }
  }
  if (cell !== "" || row.length) rows.push([...row, cell]); // a last record without CRLF
  return rows;
}

/** Checks that every element of items is a components/schemas/<name>: an export format's documented shape. */
function checkShape(ctx, name, items, what) {
  const { validate } = validatorFor(ctx, `#/components/schemas/${name}`, { $ref: `#/components/schemas/${name}` });
  const bad = [];
  (Array.isArray(items) ? items : []).forEach((x, i) => validate(x) || bad.push(`${i}: ${ctx.ajv.errorsText(validate.errors)}`));
  return check(Array.isArray(items) && items.length > 0 && bad.length === 0, `${what}: ${items?.length} elements, each a ${name}`, bad.slice(0, 5).join("\n"));
}

/** The OHIF viewer link the README gives for a sample's meta (default --viewer-url), or null. */
function viewerUrl(meta) {
  if (!meta?.study_uid) return null;
  const e = encodeURIComponent;
  return `http://localhost:3000/viewer?StudyInstanceUIDs=${e(meta.study_uid)}${meta.series_uid ? `&SeriesInstanceUIDs=${e(meta.series_uid)}` : ""}` +
    `${meta.sop_uid ? `&initialSOPInstanceUID=${e(meta.sop_uid)}` : ""}`;
}

/** Whether a uri is a URL (it has a scheme, RFC 3986). */
const isUrl = (uri) => /^[A-Za-z][A-Za-z0-9+.-]+:/.test(uri ?? "");

/** Label Studio's image for a uri exported with local_files_root=/ (README "Exports"), or null (left out). */
function lsImage(uri) {
  if (!uri) return null;
  if (isUrl(uri)) return uri.toLowerCase().startsWith("file:") ? null : uri;
  const segs = uri.split("/").filter((x) => x !== "" && x !== ".");
  return segs.length && !segs.includes("..") ? `/data/local-files/?d=${segs.map(encodeURIComponent).join("/")}` : null;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** Review decisions and their audit trail, sample meta, the relabel feed, review queues and exports (README
 * "The review loop"), on a dataset of their own. */
async function exerciseReview(ctx) {
  const J = (method, p, opts) => call(ctx, method, p, opts);
  const post = (p, json, opts = {}) => J("POST", p, { json, ...opts });
  const put = (p, json, opts = {}) => J("PUT", p, { json, ...opts });
  const enc = encodeURIComponent;
  const D = "/v1/datasets/rev";
  const S = (id) => `${D}/samples/${enc(id)}`;
  const ids = (list) => (Array.isArray(list) ? list.map((x) => x.id ?? x.focald_id ?? x.data?.focald_id) : null);
  let r;

  // samples with meta (a file, DICOM UIDs, patients; an id and a uri that CSV must quote) in two runs
  const tricky = 's,4"';
  const meta = {
    s1: { uri: "s3://bucket/s1.png", study_uid: "1.2.3.1", series_uid: "1.2.3.1.1", sop_uid: "1.2.3.1.1.1", patient_id: "P1", tags: ["a"] },
    s2: { uri: "s2.png", study_uid: "1.2.3.2", patient_id: "P1" },
    s3: { patient_id: "P2" },
    [tricky]: { uri: 'x,"y".png', site: 3 },
    s6: { patient_id: "P3" },
    s7: { uri: "s7.png", study_uid: "1.2.3.7", patient_id: "P4" },
  };
  const softmax = { type: "softmax_focal" };
  await post(`${D}/batches`, {
    run: "r1",
    step: 1,
    loss: softmax,
    ids: ["s1", "s2", "s3", tricky, "s5", "s6", "s7"],
    logits: [[0, 2, 0], [5, 0, 0], [0, 3, 0], [0, 0, 1], [1, 1, 1], [0, 0, 2], [2, 0, 1]],
    targets: [0, 0, 1, 0, 1, 1, 2],
    meta,
  }, { expect: 200, label: "review loop: samples with meta" });
  await post(`${D}/batches`, { run: "r2", step: 1, loss: softmax, ids: ["s1", "s5"], logits: [[0, 1, 0], [0, 1, 0]], targets: [0, 1] }, { expect: 200, label: "review loop: a second run" });

  // PUT meta
  const m5 = { uri: "s5.png", study_uid: "1.2.3.5", tags: { scanner: "x" }, extra: [1, 2] };
  r = await put(`${S("s5")}/meta`, m5, { expect: 200 });
  if (r) check(r.id === "s5" && same(r.meta, { extra: [1, 2], study_uid: "1.2.3.5", tags: { scanner: "x" }, uri: "s5.png" }), `meta: answers the stored meta, keys sorted (${JSON.stringify(r)})`);
  r = await J("GET", S("s5"), { expect: 200, label: "after PUT meta" });
  if (r) check(r.meta?.uri === "s5.png" && r.meta?.study_uid === "1.2.3.5", `meta: the sample has the new meta (${JSON.stringify(r.meta)})`);
  await put(`${S("s5")}/meta`, { uri: 5 }, { expect: 422, code: "invalid_field", field: "/uri" });
  await put(`${S("s5")}/meta`, { tags: "a" }, { expect: 422, code: "invalid_field", field: "/tags", label: "tags a string" });
  await put(`${S("s5")}/meta`, ["uri"], { expect: 422, code: "invalid_field", label: "not an object" });
  await J("PUT", `${S("s5")}/meta`, { raw: "{\"uri\":", headers: { "Content-Type": "application/json" }, expect: 400, code: "bad_json" });
  await J("PUT", `${S("s5")}/meta`, { raw: "{}", expect: 415, code: "unsupported_media_type", label: "no Content-Type" });
  await put(`${S("nope")}/meta`, {}, { expect: 404, code: "sample_not_found" });
  await put("/v1/datasets/nope/samples/s5/meta", {}, { expect: 404, code: "dataset_not_found" });
  await J("GET", `${S("s5")}/meta`, { expect: 405, code: "method_not_allowed" });

  // review decisions: s3 relabelled, relabelled again (a name, then a list), reopened (withdrawn), relabelled
  r = await post(`${S("s3")}/review`, { status: "relabelled", label: 2, reviewer: "ana", note: "a fox" }, { expect: 200 });
  if (r)
    check(r.id === "s3" && r.from === "open" && r.status === "relabelled" && r.label_before === 1 && r.label === 2 && r.reviewer === "ana" && r.note === "a fox" && !Number.isNaN(Date.parse(r.at)),
      `review: the change as recorded, label_before the training label (${JSON.stringify(r)})`);
  await post(`${S("s3")}/review`, { status: "confirmed" }, { expect: 409, code: "conflict", field: "/status", label: "relabelled to confirmed" });
  r = await post(`${S("s3")}/review`, { status: "relabelled", label: "fox" }, { expect: 200, label: "a relabel replaced by a class name" });
  if (r) check(r.from === "relabelled" && r.label_before === 2 && r.label === "fox" && r.reviewer === null && r.note === null, `review: relabel replaced (${JSON.stringify(r)})`);
  await post(`${S("s3")}/review`, { status: "relabelled", label: [0, "cat"] }, { expect: 200, label: "a multi-label correction" });
  r = await post(`${S("s3")}/review`, { status: "open", reviewer: "bo" }, { expect: 200, label: "reopened" });
  if (r) check(r.label === null && same(r.label_before, [0, "cat"]), `review: reopening answers label null (${JSON.stringify(r)})`);
  await post(`${S("s3")}/review`, { status: "relabelled", label: 2 }, { expect: 200, label: "relabelled again" });
  await post(`${S("s6")}/review`, { status: "in_review" }, { expect: 200 });
  await post(`${S("s6")}/review`, { status: "dismissed", note: "blurred" }, { expect: 200 });
  r = await post(`${S("s2")}/review`, { status: "confirmed" }, { expect: 200 });
  if (r) check(r.from === "open" && r.status === "confirmed" && r.label === null && r.label_before === 0, `review: confirmed (${JSON.stringify(r)})`);
  await post(`${S("s2")}/review`, { status: "confirmed" }, { expect: 409, code: "conflict", field: "/status", label: "the state it is in" });
  await post(`${S("s2")}/review`, { status: "queued" }, { expect: 409, code: "conflict", field: "/status", label: "confirmed to queued" });
  // review errors
  await post(`${S("s1")}/review`, {}, { expect: 422, code: "missing_field", field: "/status" });
  await post(`${S("s1")}/review`, { status: "done" }, { expect: 422, code: "invalid_field", field: "/status" });
  await post(`${S("s1")}/review`, { status: "open", colour: "red" }, { expect: 422, code: "unknown_field", field: "/colour" });
  await post(`${S("s1")}/review`, { status: "relabelled" }, { expect: 422, code: "missing_field", field: "/label", label: "relabelled without a label" });
  await post(`${S("s1")}/review`, { status: "confirmed", label: 1 }, { expect: 422, code: "invalid_field", field: "/label", label: "a label without relabelled" });
  await post(`${S("s1")}/review`, { status: "relabelled", label: -1 }, { expect: 422, code: "label_out_of_range", field: "/label", label: "a negative class" });
  await post(`${S("s1")}/review`, { status: "confirmed", reviewer: "r".repeat(129) }, { expect: 422, code: "too_large", field: "/reviewer", label: "a reviewer over 128 bytes (meta and notes past their limits pass --max-body 4096 here)" });
  await post(`${S("s1")}/review`, { status: "relabelled", label: 2147483648 }, { expect: 422, code: "label_out_of_range", field: "/label", label: "a class past 2^31 - 1" });
  await post(`${S("s1")}/review`, { status: "relabelled", label: [0, 4294967296] }, { expect: 422, code: "label_out_of_range", field: "/label/1", label: "a class past 2^31 - 1 in a list" });
  await post(`${S("s1")}/review`, { status: "dismissed", reviewer: 7 }, { expect: 422, code: "invalid_field", field: "/reviewer" });
  await post(`${S("s1")}/review`, { status: "dismissed", note: "x".repeat(4097) }, { expect: 413, code: "body_too_large", label: "over --max-body" });
  await post(`${S("s1")}/review`, "confirmed", { expect: 422, code: "invalid_field", label: "not an object" });
  await J("POST", `${S("s1")}/review`, { raw: "{\"status\":", headers: { "Content-Type": "application/json" }, expect: 400, code: "bad_json" });
  await J("POST", `${S("s1")}/review`, { raw: "{}", headers: { "Content-Type": "text/plain" }, expect: 415, code: "unsupported_media_type" });
  await post(`${S("nope")}/review`, { status: "confirmed" }, { expect: 404, code: "sample_not_found" });
  await post("/v1/datasets/nope/samples/s1/review", { status: "confirmed" }, { expect: 404, code: "dataset_not_found" });
  await post("/v1/datasets/b@d/samples/s1/review", { status: "confirmed" }, { expect: 404, code: "dataset_not_found", label: "not a dataset name" });
  await J("GET", `${S("s1")}/review`, { expect: 405, code: "method_not_allowed" });
  r = await J("GET", S("s1"), { expect: 200, label: "after the refused reviews" });
  if (r) check(r.status === "open", "review: refused changes changed nothing");

  // the audit trail
  r = await J("GET", `${S("s3")}/reviews`, { expect: 200 });
  if (r) {
    const tos = r.reviews?.map((e) => e.to);
    check(r.status === "relabelled" && r.corrected_label === 2 && same(tos, ["relabelled", "relabelled", "relabelled", "open", "relabelled"]),
      `reviews: every change, oldest first (${JSON.stringify(tos)})`);
    check(r.reviews?.[3]?.from === "relabelled" && r.reviews[3].label_after === null && same(r.reviews[3].label_before, [0, "cat"]) && r.reviews[3].reviewer === "bo",
      `reviews: the reopening entry (${JSON.stringify(r.reviews?.[3])})`);
  }
  r = await J("GET", `${S("s5")}/reviews`, { expect: 200, label: "never reviewed" });
  if (r) check(r.status === "open" && r.corrected_label === null && same(r.reviews, []), "reviews: a sample never reviewed has an empty trail");
  await J("GET", `${S("nope")}/reviews`, { expect: 404, code: "sample_not_found" });
  await J("GET", "/v1/datasets/nope/samples/s1/reviews", { expect: 404, code: "dataset_not_found" });

  // the same routes with the id in the query: ids a browser cannot send in a path
  const DQ = "/v1/datasets/dots";
  await post(`${DQ}/batches`, { run: "r3", step: 1, loss: softmax, ids: [".", "..", "a/b"], logits: [[0, 1, 0], [1, 0, 0], [0, 0, 1]], targets: [0, 1, 2] }, { expect: 200, label: "ids . .. a/b" });
  const Q = (id, sub = "") => `${DQ}/sample${sub}?id=${enc(id)}`;
  for (const id of [".", ".."]) {
    r = await J("GET", Q(id), { expect: 200, label: `sample?id=${id}` });
    if (r) check(r.id === id, `sample?id=: the sample "${id}" (${JSON.stringify(r.id)})`);
    r = await put(Q(id, "/meta"), { uri: "dot.png" }, { expect: 200, label: `sample/meta?id=${id}` });
    if (r) check(r.id === id, `sample/meta?id=: the sample "${id}"`);
    r = await post(Q(id, "/review"), { status: "dismissed", reviewer: "dot" }, { expect: 200, label: `sample/review?id=${id}` });
    if (r) check(r.id === id && r.status === "dismissed", `sample/review?id=: the sample "${id}" (${JSON.stringify(r)})`);
    r = await J("GET", Q(id, "/reviews"), { expect: 200, label: `sample/reviews?id=${id}` });
    if (r) check(r.id === id && r.reviews?.length === 1, `sample/reviews?id=: the trail of "${id}"`);
  }
  await J("GET", `${DQ}/sample?id=a%2Fb&run=r3`, { expect: 200, label: "sample?id= with a slash and a run" });
  await J("GET", `${DQ}/sample`, { expect: 400, code: "bad_query", field: "id", label: "sample without id" });
  await post(`${DQ}/sample/review`, { status: "confirmed" }, { expect: 400, code: "bad_query", field: "id", label: "review without id" });
  await put(`${DQ}/sample/meta?id=%zz`, {}, { expect: 400, code: "bad_query", field: "id", label: "meta with a malformed id" });
  await J("GET", Q("nope"), { expect: 404, code: "sample_not_found" });
  await J("GET", Q("nope", "/reviews"), { expect: 404, code: "sample_not_found" });
  await post(Q("nope", "/review"), { status: "confirmed" }, { expect: 404, code: "sample_not_found" });
  await put(Q("nope", "/meta"), {}, { expect: 404, code: "sample_not_found" });

  // the relabel feed: all of it, then in pages, then polled at its end
  r = await J("GET", `${D}/relabels`, { expect: 200 });
  const feed = r?.relabels;
  if (r) {
    check(r.dataset === "rev" && same(feed?.map((e) => [e.id, e.label, e.withdrawn]), [["s3", 2, false], ["s3", "fox", false], ["s3", [0, "cat"], false], ["s3", null, true], ["s3", 2, false]]),
      `relabels: relabels and the withdrawal, in order (${JSON.stringify(feed)})`);
    check(same(feed?.map((e) => e.previous_label), [1, 2, "fox", [0, "cat"], 1]), `relabels: previous_label of each (${JSON.stringify(feed?.map((e) => e.previous_label))})`);
  }
  const page1 = await J("GET", `${D}/relabels?limit=2`, { expect: 200, label: "first page" });
  if (page1) {
    const page2 = await J("GET", `${D}/relabels?since=${enc(page1.next_cursor)}&limit=10`, { expect: 200, label: "the rest" });
    if (page2) {
      check(same([...page1.relabels, ...page2.relabels], feed), "relabels: two pages make the whole feed");
      const end = await J("GET", `${D}/relabels?since=${enc(page2.next_cursor)}`, { expect: 200, label: "polled at the end" });
      if (end) check(end.relabels?.length === 0 && end.next_cursor === page2.next_cursor, `relabels: at the end, nothing and the same cursor (${JSON.stringify(end)})`);
    }
  }
  await J("GET", `${D}/relabels?since=abc`, { expect: 400, code: "bad_query" });
  await J("GET", `${D}/relabels?limit=0`, { expect: 400, code: "bad_query", label: "limit 0" });
  await J("GET", "/v1/datasets/nope/relabels", { expect: 404, code: "dataset_not_found" });

  // a batch that still sends the old label for s3 is counted; s2 becomes clearly harder after confirmation
  await post(`${D}/batches`, { run: "r1", step: 2, loss: softmax, ids: ["s3", "s2"], logits: [[0, 3, 0], [-5, 5, 0]], targets: [1, 0] }, { expect: 200, label: "old label for a relabelled sample; a confirmed one harder" });
  r = await J("GET", S("s3"), { expect: 200, label: "relabelled" });
  if (r) check(r.status === "relabelled" && r.corrected_label === 2 && r.runs?.[0]?.run === "r1" && r.runs[0].stale_labels === 1, `sample: corrected_label and stale_labels (${JSON.stringify(r.runs?.map((x) => [x.run, x.stale_labels]))})`);
  r = await J("GET", S("s2"), { expect: 200, label: "due for reconsideration" });
  if (r) check(r.status === "confirmed" && r.reconsider === true, `sample: a confirmed sample that became harder has reconsider true (${r.reconsider})`);

  // hard-examples: by default the undecided samples and the confirmed ones due for reconsideration
  const hard = await J("GET", `${D}/hard-examples`, { expect: 200, label: "review loop: the default statuses" });
  const hardIds = ids(hard?.items);
  if (hard) {
    check(same([...hardIds].sort(), ["s1", "s2", tricky, "s5", "s7"].sort()), `hard-examples: no relabelled or dismissed sample; s2 reconsidered (${JSON.stringify(hardIds)})`);
    check(hard.items.every((i) => i.reconsider === (i.id === "s2")), "hard-examples: reconsider true only for s2");
  }
  r = await J("GET", `${D}/hard-examples?status=relabelled,confirmed,dismissed`, { expect: 200, label: "decided samples" });
  if (r) check(same([...ids(r.items)].sort(), ["s2", "s3", "s6"]), `hard-examples: an explicit status list (${JSON.stringify(ids(r.items))})`);

  // review queues
  const qreq = { name: "q1", size: 3, dedupe_by: "patient_id", max_per_label: 2, quotas: { 2: { min: 1 } } };
  r = await post(`${D}/queues`, qreq, { expect: 201 });
  if (r)
    check(r.name === "q1" && r.size === 3 && r.reviewed === 0 && r.progress?.queued === 3 && same(r.params, { dedupe_by: "patient_id", max_per_label: 2, name: "q1", quotas: { 2: { min: 1 } }, size: 3 }),
      `queue: built with 3 samples, all queued, params as sent (${JSON.stringify(r)})`);
  const q = await J("GET", `${D}/queues/q1`, { expect: 200 });
  const qIds = ids(q?.items);
  if (q) {
    const it = q.items;
    check(same(it.map((i) => i.position), [1, 2, 3]) && it.every((i) => i.status === "queued" && hardIds?.includes(i.id)), `queue: positions 1..3, queued samples from the ranking (${JSON.stringify(qIds)})`);
    check(it.every((x, i) => i === 0 || x.score <= it[i - 1].score), "queue: hardest first");
    const patients = it.map((i) => i.meta?.patient_id).filter((p) => p !== undefined);
    check(new Set(patients).size === patients.length, `queue: one sample per patient_id (${JSON.stringify(patients)})`);
    check(it.some((i) => i.label === 2) && it.filter((i) => i.label === 0).length <= 2, `queue: the label quota's minimum and max_per_label (${JSON.stringify(it.map((i) => i.label))})`);
  }
  r = await J("GET", `${D}/queues/q1?offset=1&limit=1`, { expect: 200, label: "one item from offset 1" });
  if (r) check(r.offset === 1 && r.items?.length === 1 && r.items[0].position === 2, "queue: offset and limit");
  r = await J("GET", `${S(qIds?.[0] ?? "s1")}/reviews`, { expect: 200, label: "queued by the queue" });
  if (r) check(r.reviews?.at(-1)?.to === "queued" && r.reviews.at(-1).reviewer === "focald" && r.reviews.at(-1).note === "queue q1", `reviews: the queue's change (${JSON.stringify(r.reviews?.at(-1))})`);
  await post(`${D}/queues`, { name: "q1" }, { expect: 409, code: "conflict", field: "/name", label: "the name is taken" });
  await post(`${D}/queues`, { name: "q2", run: "r9" }, { expect: 404, code: "run_not_found", field: "/run" });
  await post(`${D}/queues`, { name: "q 2" }, { expect: 422, code: "bad_name", field: "/name" });
  await post(`${D}/queues`, {}, { expect: 422, code: "missing_field", field: "/name" });
  await post(`${D}/queues`, { name: "q2", colour: "red" }, { expect: 422, code: "unknown_field", field: "/colour" });
  await post(`${D}/queues`, { name: "q2", quotas: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [String(i), { max: 1 }])) }, { expect: 422, code: "too_large", field: "/quotas", label: "257 quotas" });
  await post(`${D}/queues`, { name: "q2", size: 0 }, { expect: 422, code: "invalid_field", field: "/size" });
  await post(`${D}/queues`, { name: "q2", quotas: { cats: { min: 1 } } }, { expect: 422, code: "invalid_field", field: "/quotas/cats" });
  await post(`${D}/queues`, { name: "q2", min_per_label: 5, max_per_label: 2 }, { expect: 422, code: "invalid_field", field: "/min_per_label" });
  await J("POST", `${D}/queues`, { raw: "{\"name\"", headers: { "Content-Type": "application/json" }, expect: 400, code: "bad_json" });
  await J("POST", `${D}/queues`, { raw: "{}", expect: 415, code: "unsupported_media_type", label: "no Content-Type" });
  await post("/v1/datasets/nope/queues", { name: "q1" }, { expect: 404, code: "dataset_not_found" });
  await J("PUT", `${D}/queues`, { json: {}, expect: 405, code: "method_not_allowed" });
  // a reviewer works through it
  if (qIds) {
    await post(`${S(qIds[0])}/review`, { status: "confirmed", reviewer: "ana" }, { expect: 200, label: "queued to confirmed" });
    await post(`${S(qIds[1])}/review`, { status: "in_review", reviewer: "ana" }, { expect: 200, label: "queued to in_review" });
  }
  r = await J("GET", `${D}/queues`, { expect: 200 });
  if (r) check(r.queues?.length === 1 && r.queues[0].reviewed === 1 && r.queues[0].progress?.confirmed === 1 && r.queues[0].progress?.in_review === 1, `queues: progress (${JSON.stringify(r.queues?.[0])})`);
  await J("GET", `${D}/queues/q1?limit=0`, { expect: 400, code: "bad_query" });
  await J("GET", `${D}/queues/q1?offset=-1`, { expect: 400, code: "bad_query", label: "offset -1" });
  await J("GET", `${D}/queues/nope`, { expect: 404, code: "not_found" });
  await J("GET", "/v1/datasets/nope/queues/q1", { expect: 404, code: "dataset_not_found" });
  await J("GET", "/v1/datasets/nope/queues", { expect: 404, code: "dataset_not_found" });

  // exports: each format lists what hard-examples lists, in its order and with the format's documented shape
  const X = (query, opts) => J("GET", `${D}/export?${query}`, opts);
  const base = await J("GET", `${D}/hard-examples`, { expect: 200, label: "what the exports list" });
  const items = base?.items ?? [];
  const order = ids(items);
  const csvSpec = ctx.spec.paths["/v1/datasets/{dataset}/export"]?.get?.responses?.["200"]?.content?.["text/csv"]?.example;
  const csvHeader = csvSpec ? parseCsv(csvSpec)[0] : null;
  check(Array.isArray(csvHeader) && parseCsv(csvSpec).every((row) => row.length === csvHeader.length), "export: the spec's CSV example has a header and rows of as many cells");
  r = await X("format=csv", { expect: 200, want: { "Content-Type": /^text\/csv; charset=utf-8$/, "Content-Disposition": /^attachment; filename="rev\.csv"$/ } });
  if (typeof r === "string") {
    const [header, ...rows] = parseCsv(r);
    const col = (name) => rows.map((row) => row[header.indexOf(name)]);
    check(r.endsWith("\r\n") && same(header, csvHeader), `csv: the documented header row, CRLF line ends (${JSON.stringify(header)})`);
    check(rows.every((row) => row.length === header.length), "csv: every row has a cell per column");
    check(same(col("id"), order) && same(col("rank"), order.map((_, i) => String(i + 1))), `csv: hard-examples' samples and order (${JSON.stringify(col("id"))})`);
    check(same(col("status"), items.map((i) => i.status)) && same(col("reconsider"), items.map((i) => String(i.reconsider))), "csv: status and reconsider as hard-examples gives them");
    check(same(col("uri"), items.map((i) => i.meta?.uri ?? "")) && same(col("viewer_url"), items.map((i) => viewerUrl(i.meta) ?? "")), `csv: uri (quoted where needed) and viewer_url (${JSON.stringify(col("uri"))})`);
  }
  r = await X("format=jsonl", { expect: 200, want: { "Content-Type": /^application\/x-ndjson$/, "Content-Disposition": /^attachment; filename="rev\.jsonl"$/ } });
  if (checkShape(ctx, "ExportItem", r, "jsonl")) {
    check(same(ids(r), order) && same(r.map((x) => x.score), items.map((i) => i.score)), "jsonl: hard-examples' samples, order and scores");
    check(same(r.map((x) => x.viewer_url), items.map((i) => viewerUrl(i.meta))) && r.every((x) => x.corrected_label === null), "jsonl: viewer_url from the study and series; no correction");
  }
  r = await X("format=label-studio&local_files_root=/", { expect: 200, want: { "Content-Type": /^application\/json$/, "Content-Disposition": /^attachment; filename="rev-label-studio\.json"$/, Trailer: /^Focald-Skipped$/ } });
  const withImage = items.filter((i) => lsImage(i.meta?.uri));
  if (checkShape(ctx, "LabelStudioTask", r, "label-studio")) {
    check(same(ids(r), ids(withImage)) && r.every((t, i) => t.data.focald_rank === i + 1 && t.data.focald_dataset === "rev" && t.predictions[0].model_version === "*"), "label-studio: hard-examples' order, the samples with an image; rank, dataset, model_version");
    check(r.every((t, i) => t.data.image === lsImage(withImage[i].meta.uri) && (t.data.viewer_url ?? null) === viewerUrl(withImage[i].meta)), `label-studio: image the uri (a URL) or its local-files form; viewer_url with a study (${JSON.stringify(r.map((t) => t.data.image))})`);
    // data is free-form for the meta's keys: every other key must be one the spec declares
    const declared = Object.keys(ctx.spec.components.schemas.LabelStudioTask?.properties?.data?.properties ?? {});
    const stray = r.flatMap((t, i) => Object.keys(t.data).filter((k) => !declared.includes(k) && !(k in (withImage[i].meta ?? {}))));
    check(stray.length === 0, `label-studio: data holds the meta's keys and declared fields only${stray.length ? ` (undeclared: ${stray.join(", ")})` : ""}`);
    check(r.every((t, i) => i === 0 || t.predictions[0].score >= r[i - 1].predictions[0].score), `label-studio: prediction scores ascending, hardest first (${JSON.stringify(r.map((t) => t.predictions[0].score))})`);
  }
  r = await X("format=fiftyone", { expect: 200, want: { "Content-Type": /^text\/csv; charset=utf-8$/, "Content-Disposition": /^attachment; filename="rev-fiftyone\.csv"$/ } });
  if (typeof r === "string") {
    // FiftyOne's CSVDataset: a header row, the media in filepath; the samples whose uri is a local path
    const [header, ...rows] = parseCsv(r);
    const files = items.filter((i) => i.meta?.uri && !isUrl(i.meta.uri));
    check(r.endsWith("\r\n") && same(header, ["filepath", "ground_truth", "hardness", "focald_id", "focald_rank", "focald_status", "mean_loss", "label_issue"]), `fiftyone: the CSVDataset header (${JSON.stringify(header)})`);
    check(same(rows.map((x) => x[3]), ids(files)) && rows.every((x, i) => x[0] === files[i].meta.uri && Number(x[2]) === files[i].score && x[4] === String(i + 1) && x[5] === files[i].status), `fiftyone: the samples with a local file, in order; filepath the uri, hardness the score (${JSON.stringify(rows)})`);
  }
  r = await X("format=ohif", { expect: 200, want: { "Content-Type": /^application\/x-ndjson$/, "Content-Disposition": /^attachment; filename="rev-ohif\.jsonl"$/ } });
  const studies = items.filter((i) => i.meta?.study_uid);
  if (checkShape(ctx, "OhifStudy", r, "ohif"))
    check(same(ids(r), ids(studies)) && r.every((x, i) => x.rank === i + 1 && x.study_uid === studies[i].meta.study_uid && x.url === viewerUrl(studies[i].meta)), `ohif: the samples with a study, in order, with their links (${JSON.stringify(ids(r))})`);
  // the ranking's parameters, k, a queue
  r = await X("format=jsonl&k=2", { expect: 200, label: "k=2" });
  if (Array.isArray(r)) check(same(ids(r), order.slice(0, 2)), "export: k=2 gives the first two");
  const byConf = await J("GET", `${D}/hard-examples?by=confidence&run=r1&min_seen=1`, { expect: 200, label: "what the export lists" });
  r = await X("format=jsonl&by=confidence&run=r1&min_seen=1", { expect: 200, label: "by, run, min_seen" });
  if (Array.isArray(r) && byConf) check(same(ids(r), ids(byConf.items)), "export: by=confidence&run=r1 lists as hard-examples does");
  const decided = await J("GET", `${D}/hard-examples?status=relabelled,dismissed&label=1`, { expect: 200, label: "what the export lists" });
  r = await X("format=csv&status=relabelled,dismissed&label=1", { expect: 200, label: "status, label" });
  if (typeof r === "string" && decided) {
    const [header, ...rows] = parseCsv(r);
    check(same(rows.map((row) => row[1]), ids(decided.items)) && rows.some((row) => row[header.indexOf("corrected_label")] === "2"), `csv: status and label filters; the correction (${JSON.stringify(rows)})`);
  }
  r = await X("format=jsonl&queue=q1", { expect: 200, label: "a queue", want: { "Content-Disposition": /^attachment; filename="rev-q1\.jsonl"$/ } });
  if (Array.isArray(r)) check(same(ids(r), qIds), `export: a queue's samples in queue order (${JSON.stringify(ids(r))})`);
  await X("format=xml", { expect: 400, code: "bad_query", field: "format" });
  await X("by=mean_loss", { expect: 400, code: "bad_query", field: "format", label: "no format" });
  await X("format=csv&k=0", { expect: 400, code: "bad_query", field: "k" });
  await X("format=csv&by=loss", { expect: 400, code: "bad_query", field: "by" });
  await X("format=csv&status=done", { expect: 400, code: "bad_query", field: "status" });
  await X("format=csv&run=r9", { expect: 404, code: "run_not_found", field: "run" });
  await X("format=csv&queue=nope", { expect: 404, code: "not_found", field: "queue" });
  await X("format=csv&local_files_root=/data", { expect: 400, code: "bad_query", field: "local_files_root" });
  await X("format=label-studio&local_files_root=data", { expect: 400, code: "bad_query", field: "local_files_root", label: "a relative root" });
  await J("GET", "/v1/datasets/nope/export?format=csv", { expect: 404, code: "dataset_not_found" });
  await J("POST", `${D}/export?format=csv`, { json: {}, expect: 405, code: "method_not_allowed" });

  // deleting the queue releases what is still queued; the reviewer's samples keep their state
  r = await J("DELETE", `${D}/queues/q1`, { expect: 200 });
  if (r) check(r.deleted === "q1" && r.released === 1, `queue delete: one sample still queued was released (${JSON.stringify(r)})`);
  if (qIds) {
    const states = [];
    for (const id of qIds) states.push((await J("GET", S(id), { expect: 200, label: "after the queue's deletion" }))?.status);
    check(same(states, ["confirmed", "in_review", "open"]), `queue delete: confirmed, in_review, back to open (${JSON.stringify(states)})`);
  }
  await J("GET", `${D}/queues/q1`, { expect: 404, code: "not_found", label: "after delete" });
  await J("DELETE", `${D}/queues/q1`, { expect: 404, code: "not_found", label: "again" });
  r = await J("GET", `${D}/queues`, { expect: 200, label: "after delete" });
  if (r) check(same(r.queues, []), "queues: none left");
}

// ------------------------------------------------------------------ main

/** The review loop's writes with an Idempotency-Key (README "Retrying the review loop's writes"): each write
 * answered, then replayed with Idempotent-Replayed; a key reused for another request, and malformed keys. */
async function exerciseIdempotency(ctx) {
  const J = (method, p, opts) => call(ctx, method, p, opts);
  const D = "/v1/datasets/idem";
  const K = (key) => ({ "Idempotency-Key": key });
  const first = { "Idempotent-Replayed": /^$/ };
  const again = { "Idempotent-Replayed": /^true$/ };
  await J("POST", `${D}/batches`, { json: { run: "r1", ids: ["a", "b", "c", "d"], logits: [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], targets: [0, 1, 2, 1] }, expect: 200, label: "idempotency: data" });
  const writes = [
    ["POST", `${D}/samples/a/review`, { status: "relabelled", label: 2, reviewer: "ana" }, 200],
    ["POST", `${D}/samples/b/review`, { status: "confirmed" }, 200],
    ["PUT", `${D}/samples/c/meta`, { uri: "c.png" }, 200],
    ["POST", `${D}/queues`, { name: "q1", size: 2 }, 201],
    ["DELETE", `${D}/queues/q1`, undefined, 200],
  ];
  let i = 0;
  for (const [method, p, json, status] of writes) {
    const key = `"openapi-${i++}"`;
    const a = await J(method, p, { json, headers: K(key), expect: status, want: first, label: "with a key" });
    const b = await J(method, p, { json, headers: K(key), expect: status, want: again, label: "the key again" });
    check(a !== null && JSON.stringify(a) === JSON.stringify(b), `${method} ${p}: a replay answers as the first did`);
  }
  await J("POST", `${D}/samples/d/review`, { json: { status: "dismissed" }, headers: K('"openapi-0"'), expect: 422, code: "idempotency_key_reused", field: "Idempotency-Key" });
  await J("DELETE", `${D}/queues/q1`, { headers: K('"openapi-1"'), expect: 422, code: "idempotency_key_reused", field: "Idempotency-Key", label: "a review's key on a deletion" });
  for (const [label, key] of [["empty", ""], ["too long", "k".repeat(256)], ["a space outside quotes", "a b"], ["unclosed quote", '"abc']]) {
    await J("POST", `${D}/samples/d/review`, { json: { status: "dismissed" }, headers: K(key), expect: 400, code: "bad_idempotency_key", field: "Idempotency-Key", label });
    await J("PUT", `${D}/samples/d/meta`, { json: {}, headers: K(key), expect: 400, code: "bad_idempotency_key", field: "Idempotency-Key", label });
    await J("POST", `${D}/queues`, { json: { name: "q2" }, headers: K(key), expect: 400, code: "bad_idempotency_key", field: "Idempotency-Key", label });
    await J("DELETE", `${D}/queues/q2`, { headers: K(key), expect: 400, code: "bad_idempotency_key", field: "Idempotency-Key", label });
  }
}

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
