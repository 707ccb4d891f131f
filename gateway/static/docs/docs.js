// The docs page: reads /openapi.json and draws every operation, grouped by its first tag, with its schemas,
// code samples and a "Try it" form that calls the gateway (streams read as they arrive). Every string from the
// document goes into the page as text, never as HTML.
import { append, bindKey, copyText, el, errorMessage, listModels, readSSE, storedKey, tryJSON } from "/static/common/util.js";

const GROUPS = ["OpenAI", "Responses", "Anthropic", "Gemini", "Service", "Admin"];
const METHODS = ["get", "post", "put", "patch", "delete", "head", "options"];
const CHAT_PATH = /^\/v1\/(chat\/completions|messages|responses)$|:(stream)?generateContent$/i;
const $ = (selector) => document.querySelector(selector);

/** The group of an operation without tags, from its path. */
export function guessTag(path) {
  if (path.startsWith("/v1/messages")) return "Anthropic";
  if (path.startsWith("/v1beta") || /:(generateContent|streamGenerateContent|countTokens)$/.test(path)) return "Gemini";
  if (path.startsWith("/v1/responses")) return "Responses";
  if (/^\/(admin|auth|token)(\/|$)/.test(path)) return "Admin";
  if (path.startsWith("/v1/")) return "OpenAI";
  return "Service";
}

/** How the key goes out for a group: Anthropic and Gemini have headers of their own. */
function authHeaders(group) {
  const key = storedKey();
  if (!key) return {};
  if (group === "Anthropic") return { "x-api-key": key };
  if (group === "Gemini") return { "x-goog-api-key": key };
  return { Authorization: `Bearer ${key}` };
}

let modelsPromise = null;
/** The first model id of GET /v1/models (asked once), "kimi" when the list cannot be read. */
function firstModel() {
  modelsPromise ??= listModels(storedKey()).then((ids) => ids[0] || "kimi", () => "kimi");
  return modelsPromise;
}

function operations(spec) {
  const out = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      const op = item && item[method];
      if (!op || typeof op !== "object") continue;
      const params = [...(item.parameters || []), ...(op.parameters || [])].map((p) => resolve(spec, p));
      const group = (Array.isArray(op.tags) && op.tags[0]) || guessTag(path);
      out.push({ path, method, op, params, group });
    }
  }
  return out;
}

/** `node` with a local `$ref` followed (to #/components/...); unknown refs are answered as they are. */
function resolve(spec, node) {
  let seen = 0;
  while (node && typeof node.$ref === "string" && node.$ref.startsWith("#/") && seen++ < 20) {
    const target = node.$ref.slice(2).split("/").reduce((at, part) => (at ? at[part.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), spec);
    if (!target) break;
    node = target;
  }
  return node;
}

function refName(node) {
  return node && typeof node.$ref === "string" ? node.$ref.split("/").pop() : "";
}

// ------------------------------------------------------------------ page

async function main() {
  bindKey($("#api-key"));
  $("#api-key").addEventListener("change", () => (modelsPromise = null));
  let spec;
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error(errorMessage(await response.text(), `HTTP ${response.status}`));
    spec = await response.json();
  } catch (error) {
    $("#load-status").textContent = `Could not load /openapi.json: ${error.message}`;
    $("#load-status").classList.add("error");
    return;
  }
  renderInfo(spec.info || {});
  const ops = operations(spec);
  renderGroups(spec, ops);
  $("#filter").addEventListener("input", (event) => filter(event.target.value));
  $("#load-status").textContent = `${ops.length} operations`;
  document.body.dataset.ready = "1";
  openFromHash();
}

function renderInfo(info) {
  if (info.title) {
    $(".topbar h1").textContent = info.title;
    document.title = `${info.title} · API docs`;
  }
  $("#version").textContent = [info.version && `Version ${info.version}`, "OpenAPI"].filter(Boolean).join(" · ");
  append($("#description"), paragraphs(info.description || ""));
}

function renderGroups(spec, ops) {
  const byGroup = new Map(GROUPS.map((g) => [g, []]));
  for (const entry of ops) {
    if (!byGroup.has(entry.group)) byGroup.set(entry.group, []);
    byGroup.get(entry.group).push(entry);
  }
  const root = $("#groups");
  for (const [group, entries] of byGroup) {
    if (!entries.length) continue;
    const id = `group-${group.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
    root.append(
      el("section", { class: "group", "aria-labelledby": id, dataset: { group } },
        el("h2", { id }, group, el("span", { class: "count" }, `${entries.length}`)),
        entries.map((entry) => operationElement(spec, entry)),
      ),
    );
  }
}

function operationElement(spec, entry) {
  const { path, method, op, group } = entry;
  const lower = method.toLowerCase();
  const details = el("details", {
    class: `op ${lower}`,
    id: `op-${lower}-${path.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "")}`,
    dataset: { method: method.toUpperCase(), path, group },
  },
    el("summary", {},
      el("span", { class: `badge ${lower}` }, method.toUpperCase()),
      el("code", { class: "path" }, path),
      el("span", { class: "summary" }, op.summary || ""),
      isStream(op, path) ? el("span", { class: "pill", title: "Answers as Server-Sent Events" }, "stream") : null,
      op.deprecated ? el("span", { class: "pill" }, "deprecated") : null,
    ),
  );
  details.addEventListener("toggle", () => {
    if (details.open && !details.dataset.rendered) {
      details.dataset.rendered = "1";
      details.append(operationBody(spec, entry));
    }
  });
  return details;
}

function isStream(op, path) {
  return op["x-stream"] === true || /:streamGenerateContent$/.test(path);
}

function filter(text) {
  const needle = text.trim().toLowerCase();
  for (const section of document.querySelectorAll(".group")) {
    let shown = 0;
    for (const op of section.querySelectorAll(".op")) {
      const hay = `${op.dataset.method} ${op.dataset.path} ${op.dataset.group} ${op.querySelector(".summary").textContent}`;
      op.hidden = Boolean(needle) && !hay.toLowerCase().includes(needle);
      shown += op.hidden ? 0 : 1;
    }
    section.hidden = shown === 0;
  }
}

function openFromHash() {
  const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") {
    target.open = true;
    target.scrollIntoView();
  }
}

/** Text as paragraphs; `backticks` become <code>. */
function paragraphs(text) {
  return String(text)
    .split(/\n\s*\n/)
    .filter((p) => p.trim())
    .map((p) => el("p", {}, String(p).split(/`([^`]+)`/).map((part, i) => (i % 2 ? el("code", {}, part) : part))));
}

// ------------------------------------------------------------------ one operation

function operationBody(spec, entry) {
  const { op, params } = entry;
  const body = el("div", { class: "op-body" });
  append(body, paragraphs(op.description || ""));
  if (params.length) body.append(el("h3", {}, "Parameters"), paramsTable(params));
  const json = requestJSON(spec, op);
  if (json && json.schema) {
    body.append(el("h3", {}, "Request body ", el("span", { class: "pill" }, "application/json")));
    body.append(schemaTree(spec, json.schema));
  }
  const samples = el("div", { class: "samples" });
  body.append(tryIt(spec, entry, samples));
  body.append(el("h3", {}, "Code samples"), samples);
  body.append(responsesElement(spec, op));
  return body;
}

function requestJSON(spec, op) {
  const request = resolve(spec, op.requestBody);
  const content = request && request.content;
  return content && (content["application/json"] || Object.values(content)[0]);
}

function paramsTable(params) {
  return el("table", { class: "params" },
    el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "In"), el("th", {}, "Type"), el("th", {}, "Description"))),
    el("tbody", {}, params.map((p) =>
      el("tr", {},
        el("td", {}, el("code", {}, p.name || ""), p.required ? el("span", { class: "req error" }, " *") : null),
        el("td", {}, p.in || ""),
        el("td", {}, typeLabel(p.schema || {})),
        el("td", {}, p.description || ""),
      ))),
  );
}

function responsesElement(spec, op) {
  const wrap = el("div", { class: "responses" }, el("h3", {}, "Responses"));
  for (const [code, raw] of Object.entries(op.responses || {})) {
    const response = resolve(spec, raw) || {};
    const item = el("div", { class: "response" },
      el("h4", {}, el("span", { class: "status-code" }, code), response.description || ""));
    for (const [type, media] of Object.entries(response.content || {})) {
      item.append(el("div", {}, el("span", { class: "pill" }, type)));
      if (media && media.schema) item.append(schemaTree(spec, media.schema));
    }
    wrap.append(item);
  }
  return wrap;
}

// ------------------------------------------------------------------ schemas

function typeLabel(schema) {
  if (!schema || typeof schema !== "object") return "";
  if (schema.$ref) return refName(schema);
  if (schema.const !== undefined) return `const ${JSON.stringify(schema.const)}`;
  let type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "";
  if (type === "array" && schema.items) type = `array of ${typeLabel(schema.items) || "any"}`;
  if (!type && (schema.oneOf || schema.anyOf)) type = (schema.oneOf || schema.anyOf).map(typeLabel).join(" | ");
  if (!type && schema.properties) type = "object";
  if (schema.format) type += ` (${schema.format})`;
  return type;
}

/** A readable, collapsible tree of a JSON schema; `$ref`s resolved, recursion shown once. */
function schemaTree(spec, schema) {
  return el("ul", { class: "schema root" }, schemaNode(spec, schema, "", false, 0, new Set()));
}

function schemaNode(spec, raw, name, required, depth, seen) {
  const ref = refName(raw);
  const schema = resolve(spec, raw) || {};
  const head = [
    name ? el("span", { class: "prop" }, name) : null,
    el("span", { class: "type" }, ref || typeLabel(schema) || "any"),
    required ? el("span", { class: "req" }, "required") : null,
    schema.description ? el("span", { class: "desc" }, schema.description) : null,
    Array.isArray(schema.enum) ? el("span", { class: "desc" }, `one of: ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`) : null,
    schema.default !== undefined ? el("span", { class: "desc" }, `default: ${JSON.stringify(schema.default)}`) : null,
  ];
  if ((ref && seen.has(ref)) || depth > 10) return el("li", {}, head, el("span", { class: "desc" }, "(see above)"));
  const inner = new Set(seen);
  if (ref) inner.add(ref);
  const children = childNodes(spec, schema, depth + 1, inner);
  if (!children.length) return el("li", {}, head);
  return el("li", {}, el("details", { open: depth < 1 }, el("summary", {}, head), el("ul", { class: "schema" }, children)));
}

function childNodes(spec, schema, depth, seen) {
  const out = [];
  const required = new Set(schema.required || []);
  for (const part of schema.allOf || []) out.push(...childNodes(spec, resolve(spec, part) || {}, depth, seen));
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    out.push(schemaNode(spec, prop, name, required.has(name), depth, seen));
  }
  if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
    out.push(schemaNode(spec, schema.additionalProperties, "{key}", false, depth, seen));
  }
  if (schema.items) {
    const items = resolve(spec, schema.items) || {};
    if (items.properties || items.allOf || items.oneOf || items.anyOf) out.push(schemaNode(spec, schema.items, "[item]", false, depth, seen));
  }
  (schema.oneOf || schema.anyOf || []).forEach((alt, i) => out.push(schemaNode(spec, alt, `option ${i + 1}`, false, depth, seen)));
  return out;
}

// ------------------------------------------------------------------ examples and samples

/** The request body to start from: the document's example (asking for a stream where the route can stream,
 *  so that try-it shows the answer as it arrives), else a default for the chat routes. */
async function exampleBody(spec, entry) {
  const json = requestJSON(spec, entry.op);
  const named = json && json.examples && Object.values(json.examples)[0];
  const documented = json && json.example !== undefined ? json.example : named && named.value;
  if (documented !== undefined) return streaming(entry, documented);
  const path = entry.path;
  if (!CHAT_PATH.test(path)) return entry.method === "post" && json ? {} : undefined;
  const model = await firstModel();
  if (path === "/v1/chat/completions") return { model, messages: [{ role: "user", content: "Hello" }], stream: true };
  if (path === "/v1/messages") return { model, max_tokens: 1024, messages: [{ role: "user", content: "Hello" }], stream: true };
  if (path === "/v1/responses") return { model, input: "Hello", stream: true };
  return { contents: [{ role: "user", parts: [{ text: "Hello" }] }] };
}

function streaming(entry, body) {
  const asks = body !== null && typeof body === "object" && !Array.isArray(body) && "stream" in body;
  return asks && isStream(entry.op, entry.path) ? { ...body, stream: true } : body;
}

function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

function curlSample(entry, url, body) {
  const header = { Anthropic: "x-api-key: $KIMI_GATEWAY_KEY", Gemini: "x-goog-api-key: $KIMI_GATEWAY_KEY" }[entry.group] || "Authorization: Bearer $KIMI_GATEWAY_KEY";
  const lines = [`curl${body !== undefined && body.stream ? " -N" : ""} -X ${entry.method.toUpperCase()} ${shellQuote(url)}`, `  -H "${header}"`];
  if (body !== undefined) lines.push(`  -H 'Content-Type: application/json'`, `  -d ${shellQuote(JSON.stringify(body, null, 2))}`);
  return lines.join(" \\\n");
}

function renderSamples(container, samples) {
  container.replaceChildren(...samples.map((sample) => {
    const copy = el("button", { type: "button", class: "copy" }, "Copy");
    copy.addEventListener("click", () => copyText(sample.source, copy));
    return el("div", { class: "sample" },
      el("div", { class: "sample-head" }, el("strong", {}, sample.label || sample.lang || "sample"), copy),
      el("pre", {}, el("code", { class: sample.lang ? `lang-${sample.lang}` : "" }, sample.source || "")),
    );
  }));
}

// ------------------------------------------------------------------ try it

function pathParams(entry) {
  const named = new Set(entry.params.filter((p) => p.in === "path").map((p) => p.name));
  for (const match of entry.path.matchAll(/\{(\w+)\}/g)) named.add(match[1]);
  return [...named];
}

function tryIt(spec, entry, samplesBox) {
  const { path, method } = entry;
  const uid = `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, "-");
  const fields = el("div", { class: "fields" });
  const inputs = new Map();
  for (const name of pathParams(entry)) {
    const input = el("input", { id: `${uid}-p-${name}`, name, required: true, spellcheck: "false" });
    inputs.set(name, input);
    fields.append(el("label", { for: input.id }, `${name} (path)`, input));
  }
  const query = new Map();
  for (const param of entry.params.filter((p) => p.in === "query")) {
    const input = el("input", { id: `${uid}-q-${param.name}`, name: param.name, spellcheck: "false" });
    query.set(param.name, input);
    fields.append(el("label", { for: input.id }, `${param.name} (query)`, input));
  }
  if (/:streamGenerateContent$/.test(path) && !query.has("alt")) {
    const input = el("input", { id: `${uid}-q-alt`, name: "alt", value: "sse", spellcheck: "false" });
    query.set("alt", input);
    fields.append(el("label", { for: input.id }, "alt (query)", input));
  }
  const hasBody = !["get", "head", "delete"].includes(method) || Boolean(requestJSON(spec, entry.op));
  const editor = hasBody ? el("textarea", { id: `${uid}-body`, name: "body", class: "code", rows: 10, spellcheck: "false" }) : null;
  const send = el("button", { type: "submit", class: "primary send" }, "Send");
  const stop = el("button", { type: "button", class: "danger stop", disabled: true }, "Stop");
  const result = el("div", { class: "result", dataset: { state: "idle" }, "aria-live": "polite" });
  const form = el("form", { class: "tryit", "aria-label": `Try ${method.toUpperCase()} ${path}` },
    el("h3", {}, "Try it"),
    fields.childElementCount ? fields : null,
    editor ? [el("label", { for: editor.id }, "Request body (JSON)"), editor] : null,
    el("div", { class: "actions" }, send, stop),
    result,
  );
  const urlOf = () => buildURL(path, inputs, query);
  const given = entry.op["x-codeSamples"];
  const refreshSamples = () => {
    if (Array.isArray(given) && given.length) return renderSamples(samplesBox, given);
    const body = editor ? tryJSON(editor.value) : undefined;
    renderSamples(samplesBox, [{ lang: "shell", label: "curl", source: curlSample(entry, location.origin + urlOf(), body) }]);
  };
  prefill(spec, entry, inputs, editor).then(refreshSamples);
  for (const input of [...inputs.values(), ...query.values(), editor].filter(Boolean)) input.addEventListener("change", refreshSamples);
  let controller = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      await call(entry, urlOf(), editor, result, controller.signal);
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
  stop.addEventListener("click", () => controller && controller.abort());
  return form;
}

async function prefill(spec, entry, inputs, editor) {
  if (inputs.has("model")) inputs.get("model").value = await firstModel();
  if (!editor) return;
  const body = await exampleBody(spec, entry);
  editor.value = body === undefined ? "" : JSON.stringify(body, null, 2);
}

function buildURL(path, inputs, query) {
  const url = path.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(inputs.get(name).value.trim()));
  const search = new URLSearchParams();
  for (const [name, input] of query) if (input.value.trim()) search.set(name, input.value.trim());
  const text = search.toString();
  return text ? `${url}?${text}` : url;
}

/** Send the request and show what comes back; an SSE body is shown event by event as it arrives. */
async function call(entry, url, editor, result, signal) {
  const headers = { ...authHeaders(entry.group) };
  let body;
  if (editor && editor.value.trim()) {
    if (tryJSON(editor.value) === undefined) return showProblem(result, "The request body is not valid JSON.");
    body = editor.value;
    headers["Content-Type"] = "application/json";
  }
  const status = el("span", { class: "status" }, "…");
  const meta = el("div", { class: "meta" }, status);
  const textBox = el("pre", { class: "text", hidden: true, "aria-label": "Answer text" });
  const raw = el("pre", { class: "raw", "aria-label": "Response body" });
  result.replaceChildren(el("h4", {}, "Response"), meta, textBox, raw);
  result.dataset.state = "sending";
  try {
    const response = await fetch(url, { method: entry.method.toUpperCase(), headers, body, signal });
    status.textContent = `${response.status} ${response.statusText}`.trim();
    status.classList.add(response.ok ? "ok" : "bad");
    for (const name of ["x-request-id", "content-type", "retry-after"]) {
      const value = response.headers.get(name);
      if (value) meta.append(el("span", { class: `header-${name}` }, `${name}: ${value}`));
    }
    if ((response.headers.get("content-type") || "").includes("text/event-stream")) {
      result.dataset.state = "streaming";
      textBox.hidden = !CHAT_PATH.test(entry.path);
      await readSSE(response, ({ raw: block, data }) => {
        raw.append(`${block}\n\n`);
        raw.scrollTop = raw.scrollHeight;
        const text = deltaText(data);
        if (text) textBox.append(text);
      });
    } else {
      const text = await response.text();
      const parsed = tryJSON(text);
      raw.textContent = parsed === undefined ? text : JSON.stringify(parsed, null, 2);
    }
    result.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      result.dataset.state = "aborted";
      meta.append(el("span", { class: "error" }, "Stopped."));
    } else {
      showProblem(result, `The request failed: ${error.message}`);
    }
  }
}

function showProblem(result, message) {
  result.dataset.state = "error";
  result.append(el("p", { class: "error", role: "alert" }, message));
}

/** The answer text one SSE data payload adds, in any of the four dialects ("" for the rest). */
export function deltaText(data) {
  const event = tryJSON(data);
  if (!event || typeof event !== "object") return "";
  if (Array.isArray(event.choices)) return event.choices.map((c) => (c.delta && typeof c.delta.content === "string" ? c.delta.content : "")).join("");
  if (event.type === "content_block_delta" && event.delta && event.delta.type === "text_delta") return event.delta.text || "";
  if (event.type === "response.output_text.delta") return event.delta || "";
  if (Array.isArray(event.candidates)) {
    return event.candidates.flatMap((c) => (c.content && c.content.parts) || []).filter((p) => !p.thought).map((p) => p.text || "").join("");
  }
  return "";
}

main();
