// The playground: a chat on POST /v1/chat/completions (stream: true). The page keeps the conversation and sends
// it whole with each turn (plain OpenAI multi-turn); answers render as they stream, reasoning in a collapsed
// block, search citations as links. Attachments go as OpenAI `image_url` and `file` parts with data URLs.
import { bindKey, el, errorMessage, listModels, readSSE, storedKey, tryJSON } from "/static/common/util.js";
import { link, render } from "/static/playground/markdown.js";

const MODEL_STORE = "kimi-gateway.playground-model";
const $ = (selector) => document.querySelector(selector);

/** The conversation sent with each turn, the attachments of the next one, the stream in flight. */
const state = { history: [], pending: [], controller: null, models: [] };

// ------------------------------------------------------------------ models and options

/** `id` with the model-name flag `flag` ("thinking"), when the model list offers that id. */
export function variant(id, flag, ids) {
  if (id.split("-").includes(flag)) return id;
  const candidates = [id.replace(/-instant$/, `-${flag}`), `${id}-${flag}`];
  return candidates.find((c) => c !== id && ids.includes(c)) || null;
}

async function loadModels() {
  const select = $("#model");
  try {
    state.models = await listModels(storedKey());
  } catch (error) {
    state.models = [];
    showError(`Could not list the models: ${error.message}`);
  }
  const stored = localStorage.getItem(MODEL_STORE);
  const keep = select.value || stored;
  select.replaceChildren(...state.models.map((id) => el("option", { value: id }, id)));
  if (state.models.includes(keep)) select.value = keep;
  updateOptions();
}

function updateOptions() {
  const picked = $("#model").value;
  const thinking = $("#thinking");
  const own = picked.split("-").includes("thinking");
  const other = variant(picked, "thinking", state.models);
  thinking.disabled = own || !other;
  if (own) thinking.checked = true;
  else if (!other) thinking.checked = false;
  const search = $("#search");
  search.disabled = picked.split("-").includes("search");
  if (search.disabled) search.checked = true;
  $("#model-note").textContent = picked ? `sends ${effectiveModel()}` : "";
}

/** The model id the next turn goes to: the picked one, or its -thinking variant when Thinking is on. */
function effectiveModel() {
  const picked = $("#model").value;
  const thinking = $("#thinking");
  return thinking.checked && !thinking.disabled ? variant(picked, "thinking", state.models) || picked : picked;
}

// ------------------------------------------------------------------ attachments

function readDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const file of files) {
    const dataURL = await readDataURL(file);
    state.pending.push({ name: file.name, type: file.type, image: file.type.startsWith("image/"), dataURL });
  }
  drawPending();
}

function drawPending() {
  $("#attachments").replaceChildren(...state.pending.map((item, i) =>
    el("li", { dataset: { name: item.name } },
      item.image ? el("img", { src: item.dataURL, alt: "" }) : null,
      item.name,
      el("button", { type: "button", "aria-label": `Remove ${item.name}`, onclick: () => { state.pending.splice(i, 1); drawPending(); } }, "×"),
    )));
}

/** The OpenAI content part of an attachment: an image as `image_url`, anything else as a `file`. */
export function attachmentPart(item) {
  if (item.image) return { type: "image_url", image_url: { url: item.dataURL } };
  return { type: "file", file: { filename: item.name, file_data: item.dataURL } };
}

// ------------------------------------------------------------------ the conversation

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

function addToLog(node) {
  const log = $("#log");
  const empty = log.querySelector(".empty");
  if (empty) empty.remove();
  log.append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function userBubble(text, attachments) {
  return addToLog(el("article", { class: "msg user", "aria-label": "You" },
    text,
    attachments.length ? el("div", { class: "files" }, `Attached: ${attachments.map((a) => a.name).join(", ")}`) : null,
  ));
}

/** An answer in the log, redrawn from its text as it grows. */
class AnswerView {
  constructor(model) {
    this.answer = "";
    this.reasoning = "";
    this.reasoningText = el("div", { class: "reasoning-text" });
    this.reasoningBox = el("details", { class: "reasoning", hidden: true }, el("summary", {}, "Reasoning"), this.reasoningText);
    this.answerBox = el("div", { class: "answer" });
    this.citations = el("div", { class: "citations-box", hidden: true });
    this.note = el("div", { class: "note" });
    this.node = addToLog(el("article", { class: "msg assistant", "aria-label": "Kimi", dataset: { state: "streaming" } },
      el("div", { class: "who" }, model), this.reasoningBox, this.answerBox, this.citations, this.note));
    this.timer = null;
  }

  add(content, reasoning) {
    this.answer += content;
    this.reasoning += reasoning;
    this.timer ??= setTimeout(() => this.draw(), 30);
  }

  draw() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.reasoning) {
      this.reasoningBox.hidden = false;
      this.reasoningText.textContent = this.reasoning;
    }
    const { nodes, citations } = render(this.answer);
    this.answerBox.replaceChildren(...nodes);
    this.citations.hidden = !citations.length;
    this.citations.replaceChildren(
      el("p", { class: "citations-title" }, "Sources"),
      el("ol", { class: "citations" }, citations.map((c) => el("li", { value: c.index }, link(c.title, c.url)))),
    );
  }

  end(stateName, note) {
    this.draw();
    this.node.dataset.state = stateName;
    this.note.textContent = note || "";
  }
}

async function send() {
  if (state.controller) return;
  const text = $("#prompt").value.trim();
  if (!text && !state.pending.length) return;
  if (!$("#model").value) return showError("No model to send to: check the API key, then reload the models.");
  showError("");
  const attachments = state.pending.splice(0);
  drawPending();
  const content = attachments.length ? [{ type: "text", text }, ...attachments.map(attachmentPart)] : text;
  const turn = { role: "user", content };
  const model = effectiveModel();
  const body = { model, messages: [...state.history, turn], stream: true };
  if ($("#search").checked && !$("#search").disabled) body.use_search = true;
  userBubble(text, attachments);
  $("#prompt").value = "";
  const view = new AnswerView(model);
  state.controller = new AbortController();
  setBusy(true);
  try {
    await stream(body, view, state.controller.signal);
    state.history.push(turn, { role: "assistant", content: view.answer });
    view.end("done");
  } catch (error) {
    if (error.name === "AbortError") {
      state.history.push(turn, { role: "assistant", content: view.answer });
      view.end("stopped", "Stopped.");
    } else {
      view.end("error", error.message);
      showError(error.message);
      if (view.answer) state.history.push(turn, { role: "assistant", content: view.answer });
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

/** POST the turn and feed the answer's deltas to `view`; throws the gateway's error message. */
async function stream(body, view, signal) {
  const key = storedKey();
  const headers = { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) };
  const response = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal });
  if (!response.ok) throw new Error(errorMessage(await response.text(), `HTTP ${response.status}`));
  await readSSE(response, ({ data }) => {
    if (data === "[DONE]") return;
    const chunk = tryJSON(data);
    if (!chunk) return;
    if (chunk.error) throw new Error(errorMessage(chunk, "The stream failed."));
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      view.add(typeof delta.content === "string" ? delta.content : "", typeof delta.reasoning_content === "string" ? delta.reasoning_content : "");
    }
  });
}

function setBusy(busy) {
  $("#send").disabled = busy;
  $("#stop").disabled = !busy;
  document.body.dataset.busy = busy ? "1" : "";
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.history = [];
  state.pending = [];
  drawPending();
  showError("");
  $("#log").replaceChildren(el("p", { class: "empty muted" }, "New chat."));
  $("#prompt").focus();
}

function main() {
  bindKey($("#api-key"));
  $("#api-key").addEventListener("change", loadModels);
  $("#model").addEventListener("change", () => {
    localStorage.setItem(MODEL_STORE, $("#model").value);
    updateOptions();
  });
  $("#thinking").addEventListener("change", updateOptions);
  $("#search").addEventListener("change", updateOptions);
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) state.controller.abort();
  });
  $("#stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("#new-chat").addEventListener("click", newChat);
  $("#attach-button").addEventListener("click", () => $("#attach").click());
  $("#attach").addEventListener("change", async (event) => {
    await addFiles([...event.target.files]);
    event.target.value = "";
  });
  loadModels().then(() => (document.body.dataset.ready = "1"));
}

main();
