// Helpers shared by the docs page and the playground: DOM building without innerHTML, the stored API key,
// an SSE reader for fetch bodies, error messages from the gateway's error shapes, clipboard copy.

/** An element: `attrs` are attributes (on* adds a listener; text, value, checked set the property); children are
 * nodes or text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else if (name === "value" || name === "checked") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** Append nodes or strings (as text, never parsed as HTML); arrays are flattened, null/undefined skipped. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const KEY_STORE = "kimi-gateway.api-key";

/** The API key input `input` keeps in localStorage (shared by every page of this origin). */
export function bindKey(input) {
  input.value = localStorage.getItem(KEY_STORE) || "";
  input.addEventListener("input", () => {
    if (input.value) localStorage.setItem(KEY_STORE, input.value);
    else localStorage.removeItem(KEY_STORE);
  });
}

export function storedKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

/**
 * Read a fetch Response body as Server-Sent Events; `onEvent({event, data, raw})` for each one as it arrives.
 * Resolves when the stream ends; rejects with the AbortError when the request's signal aborts.
 */
export async function readSSE(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    buffer = buffer.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, cut), onEvent);
      buffer = buffer.slice(cut + 2);
    }
    if (done) {
      if (buffer.trim()) dispatch(buffer, onEvent);
      return;
    }
  }
}

function dispatch(block, onEvent) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (data.length || event !== "message") onEvent({ event, data: data.join("\n"), raw: block });
}

/** JSON.parse that answers undefined instead of throwing. */
export function tryJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The message of an error body in any of the gateway's dialects (OpenAI, Anthropic, Gemini), else the text. */
export function errorMessage(body, fallback) {
  const parsed = typeof body === "string" ? tryJSON(body) : body;
  const error = parsed && parsed.error;
  if (error && typeof error.message === "string") return error.message;
  if (typeof error === "string") return error;
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 500);
  return fallback;
}

/** Copy `text` to the clipboard; `button` says "Copied" for a moment. */
export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", { value: text, class: "offscreen", "aria-hidden": "true" });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  if (button) {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = label), 1200);
  }
}

/** The model ids of GET /v1/models (OpenAI shape), asked with `key`; [] when the list cannot be read. */
export async function listModels(key) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch("/v1/models", { headers });
  if (!response.ok) throw new Error(errorMessage(await response.text(), `HTTP ${response.status}`));
  const body = await response.json();
  return Array.isArray(body.data) ? body.data.map((m) => m.id).filter((id) => typeof id === "string") : [];
}
