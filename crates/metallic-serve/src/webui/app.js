// The chat page of `metallic serve`.
//
// It speaks to the server only through the public API: `GET /v1/models` for the model's name
// and `POST /v1/chat/completions` with `stream: true`, read as server-sent events from the
// fetch body (EventSource cannot POST). A 401 opens a prompt for the API key, which is kept in
// localStorage and sent as `Authorization: Bearer KEY`. Stopping aborts the fetch; the server
// cancels a generation whose client hung up.
//
// Text from the model (and from the user) only ever reaches the page as text nodes: the
// markdown renderer below builds elements itself and never parses HTML.
"use strict";

(() => {
  const KEY_STORE = "metallic.apiKey";
  const SETTINGS_STORE = "metallic.settings";

  // ---------------------------------------------------------------------------------------
  // Markdown, a small subset: paragraphs, headings, fenced code, lists (nested by indent),
  // block quotes, rules; inline code, bold, italic, links with http(s) addresses only.

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const QUOTE = /^ {0,3}>\s?(.*)$/;

  /** A DocumentFragment for `source`, built from elements and text nodes only. */
  function renderMarkdown(source) {
    const fragment = document.createDocumentFragment();
    blocks(fragment, String(source).replace(/\r\n?/g, "\n").split("\n"));
    return fragment;
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || ITEM.test(line) || QUOTE.test(line);
  }

  function blocks(parent, lines) {
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (line.trim() === "") {
        i += 1;
      } else if ((m = FENCE.exec(line))) {
        // A fence left open (a reply still streaming) runs to the end.
        const marker = m[1];
        const body = [];
        i += 1;
        while (i < lines.length && !closesFence(lines[i], marker)) {
          body.push(lines[i]);
          i += 1;
        }
        i += 1;
        parent.append(codeBlock(body.join("\n"), m[2]));
      } else if ((m = HEADING.exec(line))) {
        const heading = document.createElement("h" + Math.min(6, m[1].length + 2));
        inline(heading, m[2]);
        parent.append(heading);
        i += 1;
      } else if (RULE.test(line)) {
        parent.append(document.createElement("hr"));
        i += 1;
      } else if (ITEM.test(line)) {
        i = list(parent, lines, i);
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
          quoted.push(m[1]);
          i += 1;
        }
        const quote = document.createElement("blockquote");
        blocks(quote, quoted);
        parent.append(quote);
      } else {
        const paragraph = document.createElement("p");
        let first = true;
        while (i < lines.length && lines[i].trim() !== "" && (first || !startsBlock(lines[i]))) {
          if (!first) paragraph.append(document.createElement("br"));
          inline(paragraph, lines[i].trim());
          first = false;
          i += 1;
        }
        parent.append(paragraph);
      }
    }
  }

  function closesFence(line, marker) {
    const trimmed = line.trim();
    return trimmed.length >= marker.length && trimmed === marker[0].repeat(trimmed.length);
  }

  /** The list starting at `lines[start]`; returns the index after it. */
  function list(parent, lines, start) {
    // Open lists, outermost first, each with the indent of its items.
    const open = [];
    let i = start;
    while (i < lines.length) {
      const m = ITEM.exec(lines[i]);
      if (!m) {
        // A non-blank line that starts no other block continues the last item.
        const last = open.length ? open[open.length - 1].list.lastElementChild : null;
        if (lines[i].trim() === "" || startsBlock(lines[i]) || !last) break;
        last.append(document.createElement("br"));
        inline(last, lines[i].trim());
        i += 1;
        continue;
      }
      const indent = m[1].replace(/\t/g, "    ").length;
      const ordered = /\d/.test(m[2][0]);
      while (open.length > 1 && indent < open[open.length - 1].indent) open.pop();
      let top = open[open.length - 1];
      if (!top || (indent > top.indent + 1 && top.list.lastElementChild)) {
        const element = document.createElement(ordered ? "ol" : "ul");
        const number = parseInt(m[2], 10);
        if (ordered && number !== 1) element.start = number;
        (top ? top.list.lastElementChild : parent).append(element);
        top = { list: element, indent };
        open.push(top);
      }
      const item = document.createElement("li");
      inline(item, m[3]);
      top.list.append(item);
      i += 1;
      // A blank line ends the list unless another item follows it.
      if (i < lines.length && lines[i].trim() === "" && i + 1 < lines.length && ITEM.test(lines[i + 1])) i += 1;
    }
    return i;
  }

  function codeBlock(code, language) {
    const wrapper = document.createElement("div");
    wrapper.className = "code";
    const head = document.createElement("div");
    head.className = "code-head";
    const label = document.createElement("span");
    label.textContent = language || "code";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    copy.addEventListener("click", () => {
      if (!navigator.clipboard) return;
      navigator.clipboard.writeText(code).then(
        () => { copy.textContent = "Copied"; },
        () => { copy.textContent = "Copy failed"; },
      );
    });
    head.append(label, copy);
    const pre = document.createElement("pre");
    const element = document.createElement("code");
    element.textContent = code;
    pre.append(element);
    wrapper.append(head, pre);
    return wrapper;
  }

  const ESCAPABLE = "\\`*_[]()#+-.!~<>{}|";
  const LINK = /^\[([^\]\n]+)\]\(\s*<?([^\s<>()]+)>?(?:\s+"[^"\n]*")?\s*\)/;
  const BARE_URL = /^https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]]/;

  /** Whether `url` is an absolute http(s) address, the only links made. */
  function httpUrl(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function link(href, label) {
    const a = document.createElement("a");
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    inline(a, label);
    return a;
  }

  /** Appends the inline markdown of `text` to `parent`. */
  function inline(parent, text) {
    let plain = "";
    const flush = () => {
      if (plain) parent.append(document.createTextNode(plain));
      plain = "";
    };
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        let run = 1;
        while (text[i + run] === "`") run += 1;
        const ticks = "`".repeat(run);
        let close = text.indexOf(ticks, i + run);
        while (close >= 0 && text[close + run] === "`") close = text.indexOf(ticks, close + run + 1);
        if (close < 0) {
          plain += ticks;
          i += run;
          continue;
        }
        flush();
        const code = document.createElement("code");
        let inner = text.slice(i + run, close);
        if (inner.length > 2 && inner.startsWith(" ") && inner.endsWith(" ")) inner = inner.slice(1, -1);
        code.textContent = inner;
        parent.append(code);
        i = close + run;
        continue;
      }
      if (c === "*" || c === "_") {
        const run = text[i + 1] === c ? 2 : 1;
        const close = closingEmphasis(text, i, c, run);
        if (close > 0) {
          flush();
          const element = document.createElement(run === 2 ? "strong" : "em");
          inline(element, text.slice(i + run, close));
          parent.append(element);
          i = close + run;
          continue;
        }
        plain += c.repeat(run);
        i += run;
        continue;
      }
      if (c === "[") {
        const m = LINK.exec(text.slice(i));
        const href = m && httpUrl(m[2]);
        if (href) {
          flush();
          parent.append(link(href, m[1]));
          i += m[0].length;
          continue;
        }
      }
      if ((c === "h" || c === "H") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
        const m = BARE_URL.exec(text.slice(i));
        const href = m && httpUrl(m[0]);
        if (href) {
          flush();
          const a = link(href, "");
          a.textContent = m[0];
          parent.append(a);
          i += m[0].length;
          continue;
        }
      }
      plain += c;
      i += 1;
    }
    flush();
  }

  /** Where the emphasis opened at `start` closes, or -1. */
  function closingEmphasis(text, start, c, run) {
    const after = text[start + run];
    if (after === undefined || /\s/.test(after)) return -1;
    // `_` inside a word (snake_case) is not emphasis.
    if (c === "_" && start > 0 && /[\p{L}\p{N}]/u.test(text[start - 1])) return -1;
    const marker = c.repeat(run);
    let close = text.indexOf(marker, start + run + 1);
    while (close > 0) {
      const single = run === 1 && (text[close + 1] === c || text[close - 1] === c);
      const wordy = c === "_" && /[\p{L}\p{N}]/u.test(text[close + run] || "");
      if (!/\s/.test(text[close - 1]) && !single && !wordy) return close;
      close = text.indexOf(marker, close + (single ? 2 : 1));
    }
    return -1;
  }

  // ---------------------------------------------------------------------------------------
  // The page.

  const $ = (id) => document.getElementById(id);
  const ui = {};
  const state = {
    messages: [], // {role: "user" | "assistant", content}
    model: null,
    controller: null,
    keyRequest: null,
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function storedKey() {
    try {
      return localStorage.getItem(KEY_STORE) || "";
    } catch {
      return "";
    }
  }

  // The key when storage is refused (some private windows): kept until the page closes.
  let memoryKey = "";

  function storeKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch {
      // Storage refused: `memoryKey` holds it.
    }
    memoryKey = key;
    ui.forgetKey.hidden = !key;
  }

  const currentKey = () => storedKey() || memoryKey;

  /** The error message of a failed response (OpenAI's shape, or its status). */
  async function errorOf(response) {
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch {
      // Not JSON: the status says it.
    }
    return new ApiError(response.status, message);
  }

  /**
   * `fetch(path)` with the API key; a 401 asks for the key (once for every caller waiting)
   * and tries again with it. Cancelling the prompt fails with the 401.
   */
  async function api(path, init = {}) {
    for (;;) {
      const headers = new Headers(init.headers || {});
      if (init.body) headers.set("Content-Type", "application/json");
      const key = currentKey();
      if (key) headers.set("Authorization", `Bearer ${key}`);
      const response = await fetch(path, { ...init, headers, cache: "no-store" });
      if (response.status !== 401) return response;
      const refused = await errorOf(response);
      const entered = await askKey(key ? `The server refused that key: ${refused.message}` : "");
      if (!entered) throw refused;
    }
  }

  /** Opens the key prompt; resolves with the key saved, or "" when cancelled. */
  function askKey(problem) {
    if (!state.keyRequest) {
      state.keyRequest = new Promise((resolve) => {
        ui.keyInput.value = "";
        ui.keyError.textContent = problem;
        ui.keyError.hidden = !problem;
        const finish = (key) => {
          ui.keyForm.removeEventListener("submit", save);
          ui.keyCancel.removeEventListener("click", cancel);
          ui.keyDialog.removeEventListener("cancel", cancel);
          if (ui.keyDialog.open) ui.keyDialog.close();
          state.keyRequest = null;
          resolve(key);
        };
        const save = (event) => {
          event.preventDefault();
          const key = ui.keyInput.value.trim();
          if (!key) return;
          storeKey(key);
          finish(key);
        };
        const cancel = (event) => {
          event.preventDefault();
          finish("");
        };
        ui.keyForm.addEventListener("submit", save);
        ui.keyCancel.addEventListener("click", cancel);
        ui.keyDialog.addEventListener("cancel", cancel);
        if (!state.model) ui.model.textContent = "waiting for the API key…";
        ui.keyDialog.showModal();
        ui.keyInput.focus();
      });
    }
    return state.keyRequest;
  }

  /** Asks the server which language model it serves, waiting while it loads. */
  async function loadModel() {
    for (;;) {
      try {
        const response = await api("/v1/models");
        if (response.status === 503) {
          ui.model.textContent = "the server is loading its model…";
          await new Promise((resolve) => setTimeout(resolve, 1000));
          continue;
        }
        if (!response.ok) throw await errorOf(response);
        const list = await response.json();
        const models = Array.isArray(list.data) ? list.data : [];
        const language = models.find((m) => m.meta && m.meta.kind === "language");
        state.model = language ? language.id : null;
        ui.model.textContent = language ? language.id : "no language model is loaded";
        document.body.dataset.model = state.model || "";
        return;
      } catch (error) {
        ui.model.textContent = `not connected: ${error.message}`;
        if (error instanceof ApiError && error.status === 401) {
          // Asked and cancelled: sending a message asks again.
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 3000));
      }
    }
  }

  // --- the conversation view

  function addMessage(role, content) {
    ui.empty.hidden = true;
    const article = document.createElement("article");
    article.className = `message ${role}`;
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "content";
    article.append(who, body);
    ui.log.append(article);
    const view = { article, body, role };
    show(view, content);
    return view;
  }

  function show(view, content) {
    const follow = nearBottom();
    if (view.role === "user") {
      view.body.textContent = content;
    } else {
      view.body.replaceChildren(renderMarkdown(content));
    }
    if (follow) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function note(view, text) {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = text;
    view.article.append(p);
  }

  function nearBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  function setBusy(busy) {
    document.body.dataset.state = busy ? "generating" : "idle";
    ui.send.hidden = busy;
    ui.stop.hidden = !busy;
    if (!busy && document.activeElement === ui.stop) ui.prompt.focus();
  }

  // --- settings

  function readSettings() {
    const temperature = ui.temperature.value.trim();
    const maxTokens = ui.maxTokens.value.trim();
    return {
      system: ui.system.value,
      temperature: temperature === "" ? null : Number(temperature),
      maxTokens: maxTokens === "" ? null : Number(maxTokens),
    };
  }

  function saveSettings() {
    try {
      localStorage.setItem(SETTINGS_STORE, JSON.stringify({
        system: ui.system.value, temperature: ui.temperature.value, maxTokens: ui.maxTokens.value,
      }));
    } catch {
      // Not kept: fine.
    }
  }

  function restoreSettings() {
    try {
      const saved = JSON.parse(localStorage.getItem(SETTINGS_STORE) || "null");
      if (!saved) return;
      if (typeof saved.system === "string") ui.system.value = saved.system;
      if (typeof saved.temperature === "string") ui.temperature.value = saved.temperature;
      if (typeof saved.maxTokens === "string") ui.maxTokens.value = saved.maxTokens;
    } catch {
      // Nothing usable kept.
    }
  }

  // --- sending

  function requestBody() {
    const settings = readSettings();
    const messages = [];
    if (settings.system.trim()) messages.push({ role: "system", content: settings.system });
    messages.push(...state.messages.map((m) => ({ role: m.role, content: m.content })));
    const body = {
      model: state.model || "default",
      messages,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (settings.temperature !== null) body.temperature = settings.temperature;
    if (settings.maxTokens !== null) body.max_tokens = settings.maxTokens;
    return body;
  }

  async function send() {
    const text = ui.prompt.value;
    if (!text.trim() || state.controller) return;
    showError("");
    ui.prompt.value = "";
    state.messages.push({ role: "user", content: text });
    const userView = addMessage("user", text);
    const replied = await reply();
    if (!replied) {
      // Nothing came back: the message goes back to the box, to send again.
      state.messages.pop();
      userView.article.remove();
      if (!ui.prompt.value) ui.prompt.value = text;
      ui.empty.hidden = state.messages.length > 0;
    }
  }

  /** Streams the assistant's reply to the conversation; false when none came. */
  async function reply() {
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    const view = addMessage("assistant", "");
    view.article.classList.add("pending");
    const started = performance.now();
    const run = { text: "", pieces: 0, first: null, last: null, usage: null, finish: null, done: false };
    let drawn = false;
    const draw = () => {
      if (drawn) return;
      drawn = true;
      requestAnimationFrame(() => {
        drawn = false;
        show(view, run.text);
      });
    };
    let failure = null;
    let stopped = false;
    try {
      const response = await api("/v1/chat/completions", {
        method: "POST",
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!response.ok) throw await errorOf(response);
      await readEvents(response, (event) => {
        if (event.error) throw new ApiError(0, event.error.message || "the server failed");
        const choice = event.choices && event.choices[0];
        const piece = choice && choice.delta && choice.delta.content;
        if (piece) {
          const now = performance.now();
          if (run.first === null) run.first = now;
          run.last = now;
          run.text += piece;
          run.pieces += 1;
          draw();
        }
        if (choice && choice.finish_reason) run.finish = choice.finish_reason;
        if (event.usage) run.usage = event.usage;
      }, () => { run.done = true; });
      if (!run.done) throw new ApiError(0, "the reply was cut off");
    } catch (error) {
      if (controller.signal.aborted) stopped = true;
      else failure = error;
    }
    state.controller = null;
    view.article.classList.remove("pending");
    show(view, run.text);
    setBusy(false);
    if (!run.text) {
      // Failed or stopped before the first token: no reply to keep.
      view.article.remove();
      if (failure) showError(failure.message);
      return false;
    }
    state.messages.push({ role: "assistant", content: run.text });
    if (stopped) note(view, "stopped");
    else if (failure) note(view, `cut off: ${failure.message}`);
    else if (run.finish === "length") note(view, "stopped at the token limit");
    stats(run, started, stopped);
    return true;
  }

  /** Calls `onEvent` with each JSON `data:` event of a server-sent-event body, `onDone` at `[DONE]`. */
  async function readEvents(response, onEvent, onDone) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const boundary = /\r?\n\r?\n/;
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let m;
      while ((m = boundary.exec(buffer))) {
        const block = buffer.slice(0, m.index);
        buffer = buffer.slice(m.index + m[0].length);
        const data = block.split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") onDone();
        else onEvent(JSON.parse(data));
      }
      if (done) return;
    }
  }

  /** The last reply's numbers: tokens, tokens per second while decoding, time to first token. */
  function stats(run, started, stopped) {
    const tokens = run.usage ? run.usage.completion_tokens : run.pieces;
    const ttft = run.first === null ? null : (run.first - started) / 1000;
    const span = run.first === null ? 0 : (run.last - run.first) / 1000;
    const rate = tokens > 1 && span > 0 ? (tokens - 1) / span : null;
    const parts = [`${tokens} token${tokens === 1 ? "" : "s"}${run.usage ? "" : " (about)"}`];
    if (rate !== null) parts.push(`${rate.toFixed(1)} tokens/s`);
    if (ttft !== null) parts.push(`first token after ${ttft.toFixed(2)} s`);
    if (stopped) parts.push("stopped");
    ui.stats.textContent = `Last reply: ${parts.join(" · ")}`;
    Object.assign(ui.stats.dataset, {
      tokens: String(tokens),
      pieces: String(run.pieces),
      tokensPerSecond: rate === null ? "" : rate.toFixed(3),
      ttft: ttft === null ? "" : ttft.toFixed(3),
    });
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function newChat() {
    stop();
    state.messages = [];
    for (const message of ui.log.querySelectorAll(".message")) message.remove();
    ui.empty.hidden = false;
    ui.stats.textContent = "";
    for (const key of Object.keys(ui.stats.dataset)) delete ui.stats.dataset[key];
    showError("");
    ui.prompt.focus();
  }

  function start() {
    Object.assign(ui, {
      model: $("model"), log: $("log"), empty: $("empty"), error: $("error"), prompt: $("prompt"),
      send: $("send"), stop: $("stop"), stats: $("stats"), composer: $("composer"), newChat: $("new-chat"),
      settings: $("settings"), system: $("system"), temperature: $("temperature"), maxTokens: $("max-tokens"),
      changeKey: $("change-key"), forgetKey: $("forget-key"),
      keyDialog: $("key-dialog"), keyForm: $("key-form"), keyInput: $("key"), keyError: $("key-error"),
      keyCancel: $("key-cancel"),
    });
    restoreSettings();
    if (window.matchMedia("(min-width: 860px)").matches) ui.settings.open = true;
    ui.forgetKey.hidden = !currentKey();

    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    ui.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !event.altKey && !event.ctrlKey
          && !event.metaKey) {
        event.preventDefault();
        send();
      }
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && state.controller && !ui.keyDialog.open) stop();
    });
    ui.stop.addEventListener("click", stop);
    ui.newChat.addEventListener("click", newChat);
    for (const field of [ui.system, ui.temperature, ui.maxTokens]) field.addEventListener("input", saveSettings);
    ui.changeKey.addEventListener("click", async () => {
      if (await askKey("")) loadModel();
    });
    ui.forgetKey.addEventListener("click", () => storeKey(""));

    setBusy(false);
    ui.prompt.focus();
    loadModel();
  }

  // For tools and tests that drive the page: the renderer, and a copy of the conversation.
  window.metallicChat = Object.freeze({
    renderMarkdown,
    conversation: () => state.messages.map((m) => ({ ...m })),
  });

  start();
})();
