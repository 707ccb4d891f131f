// A minimal, safe markdown for answers: paragraphs (single newlines kept), `code`, fenced code blocks, **bold**
// and [links](https://…). Everything is built as DOM nodes from text, so nothing in an answer can become HTML.
// Search citations (the gateway's `【检索 N】 [Title](url)` lines) are taken out and returned as a list.
import { el } from "/static/common/util.js";

const FENCE = /^\s*```\s*([\w+-]*)\s*$/;
const CITATION = /^\s*【检索\s*(\d+)】\s*\[(.*)\]\((\S+)\)\s*$/;
const INLINE = /`([^`\n]+)`|\*\*(.+?)\*\*|\[([^\]\n]+)\]\(([^()\s]+)\)/g;

/** A URL string when `raw` is an absolute http(s) URL, else null. */
export function safeURL(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export function link(title, href) {
  return el("a", { href, rel: "noopener noreferrer", target: "_blank" }, title);
}

/** The nodes of `text` and the citations found in it ({index, title, url}). An unclosed fence (a code block
 * still streaming) runs to the end. */
export function render(text) {
  const nodes = [];
  const citations = [];
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) nodes.push(el("p", {}, paragraph.flatMap((line, i) => (i ? [el("br"), ...inline(line)] : inline(line)))));
    paragraph = [];
  };
  const lines = String(text).split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    const citation = CITATION.exec(line);
    if (fence) {
      flush();
      const code = [];
      while (++i < lines.length && !FENCE.test(lines[i])) code.push(lines[i]);
      nodes.push(el("pre", {}, el("code", { class: fence[1] ? `lang-${fence[1]}` : null }, code.join("\n"))));
    } else if (citation && safeURL(citation[3])) {
      flush();
      citations.push({ index: Number(citation[1]), title: citation[2], url: safeURL(citation[3]) });
    } else if (!line.trim()) {
      flush();
    } else {
      paragraph.push(line);
    }
  }
  flush();
  return { nodes, citations };
}

/** The inline nodes of one line: code spans, bold, links (http/https only; any other link stays text). */
export function inline(line, bold = true) {
  const out = [];
  let at = 0;
  for (const match of line.matchAll(INLINE)) {
    const [whole, code, strong, title, href] = match;
    if (strong !== undefined && !bold) continue;
    const url = href === undefined ? null : safeURL(href);
    if (title !== undefined && !url) continue;
    if (match.index > at) out.push(line.slice(at, match.index));
    if (code !== undefined) out.push(el("code", {}, code));
    else if (strong !== undefined) out.push(el("strong", {}, inline(strong, false)));
    else out.push(link(title, url));
    at = match.index + whole.length;
  }
  if (at < line.length) out.push(line.slice(at));
  return out;
}
