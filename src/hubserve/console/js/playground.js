// The playground on an endpoint page: a form per task, the call timed, the answer drawn for its task.

import {authHeaders, errorMessage, readStream} from "./api.js";
import {field, h, replace} from "./dom.js";
import {FILE_TASKS, exampleBody} from "./snippets.js";

const GENERATED = ["generated_text", "summary_text", "translation_text", "text"];

// The playground for `endpoint` ({name, task}): {node, stop}.
export function playground(endpoint) {
  const controller = new AbortController();
  const result = h("div", {class: "result", "data-testid": "pg-result"});
  const status = h("span", {class: "badge", "data-testid": "pg-status"});
  const time = h("span", {class: "muted", "data-testid": "pg-time"});
  const meta = h("div", {class: "row"}, status, time);
  const shown = (code, ms) => {
    status.textContent = String(code);
    status.className = `badge ${code < 300 ? "ok" : "bad"}`;
    time.textContent = `${ms.toFixed(0)} ms`;
  };
  const context = {endpoint, result, shown, signal: controller.signal};
  const task = endpoint.task;
  let form;
  if (task === "text-generation" || task === "image-text-to-text") form = chatForm(context);
  else if (FILE_TASKS[task]) form = fileForm(context, FILE_TASKS[task].accept);
  else if (FORMS[task]) form = FORMS[task](context);
  else form = jsonForm(context);
  const node = h("section", {class: "card playground", "data-testid": "playground", "data-task": task || ""},
    h("h3", {}, "Playground ", h("span", {class: "muted"}, task || "")), form, meta, result);
  return {node, stop: () => controller.abort()};
}

// POSTs `body` to the endpoint, shows status and time, and draws the answer with `draw`.
async function invoke(context, body, contentType, draw) {
  const started = performance.now();
  replace(context.result, h("p", {class: "muted"}, "Running…"));
  try {
    const response = await fetch(`/endpoints/${context.endpoint.name}`, {
      method: "POST", body, signal: context.signal, headers: authHeaders({"Content-Type": contentType}),
    });
    const elapsed = performance.now() - started;
    context.shown(response.status, elapsed);
    if (!response.ok) {
      replace(context.result, h("p", {class: "error"}, await errorMessage(response)));
      return;
    }
    replace(context.result, draw(await response.json()));
  } catch (error) {
    if (error.name !== "AbortError") replace(context.result, h("p", {class: "error"}, error.message));
  }
}

function postJson(context, body, draw = drawAnswer) {
  return invoke(context, JSON.stringify(body), "application/json", draw);
}

function runButton() {
  return h("button", {type: "submit", class: "primary", "data-testid": "pg-run"}, "Run");
}

function textForm(context, makeBody, draw) {
  const example = exampleBody(context.endpoint.task);
  const text = h("textarea", {rows: 3, "data-testid": "pg-text"}, typeof example.inputs === "string" ? example.inputs : "");
  return h("form", {onsubmit: (event) => {
    event.preventDefault();
    const sent = text.value;
    postJson(context, makeBody(sent), draw && ((answer) => draw(answer, sent)));
  }}, field("Text", text), runButton());
}

function rankedForm(context, keys) {
  const example = exampleBody(context.endpoint.task).inputs;
  const source = h("input", {"data-testid": "pg-source", value: example[keys.source]});
  const others = h("textarea", {rows: 4, "data-testid": "pg-sentences"}, example[keys.others].join("\n"));
  return h("form", {onsubmit: (event) => {
    event.preventDefault();
    const texts = others.value.split("\n").map((line) => line.trim()).filter(Boolean);
    postJson(context, {inputs: {[keys.source]: source.value, [keys.others]: texts}},
      (answer) => drawRanked(texts, Array.isArray(answer) ? answer : answer.scores));
  }}, field(keys.sourceLabel, source), field("Compared with (one per line)", others), runButton());
}

const FORMS = {
  "sentence-similarity": (c) => rankedForm(c, {source: "source_sentence", others: "sentences", sourceLabel: "Sentence"}),
  "sentence-ranking": (c) => rankedForm(c, {source: "query", others: "texts", sourceLabel: "Query"}),
  "text-classification": (c) => textForm(c, (text) => ({inputs: text, parameters: {top_k: null}})),
  "fill-mask": (c) => textForm(c, (text) => ({inputs: text})),
  "token-classification": (c) => textForm(c, (text) => ({inputs: text, parameters: {aggregation_strategy: "simple"}}),
    drawEntities),
  "feature-extraction": (c) => textForm(c, (text) => ({inputs: text}), drawVector),
  "sentence-embeddings": (c) => textForm(c, (text) => ({inputs: text}), drawVector),
  "zero-shot-classification": zeroShotForm,
  "question-answering": questionForm,
};

function zeroShotForm(context) {
  const example = exampleBody("zero-shot-classification");
  const text = h("textarea", {rows: 3, "data-testid": "pg-text"}, example.inputs);
  const labels = h("input", {"data-testid": "pg-labels", value: example.parameters.candidate_labels.join(", ")});
  return h("form", {onsubmit: (event) => {
    event.preventDefault();
    const names = labels.value.split(",").map((label) => label.trim()).filter(Boolean);
    postJson(context, {inputs: text.value, parameters: {candidate_labels: names}});
  }}, field("Text", text), field("Candidate labels (comma separated)", labels), runButton());
}

function questionForm(context) {
  const example = exampleBody("question-answering").inputs;
  const question = h("input", {"data-testid": "pg-question", value: example.question});
  const passage = h("textarea", {rows: 3, "data-testid": "pg-context"}, example.context);
  return h("form", {onsubmit: (event) => {
    event.preventDefault();
    postJson(context, {inputs: {question: question.value, context: passage.value}}, (answer) =>
      h("div", {}, h("p", {class: "answer"}, answer.answer), h("p", {class: "muted"}, `score ${answer.score?.toFixed(3)}`)));
  }}, field("Question", question), field("Context", passage), runButton());
}

function fileForm(context, accept) {
  const input = h("input", {type: "file", accept, "data-testid": "pg-file"});
  const preview = h("div", {class: "preview"});
  input.addEventListener("change", () => {
    const file = input.files[0];
    replace(preview, file && file.type.startsWith("image/") ? h("img", {src: URL.createObjectURL(file), alt: file.name}) : "");
  });
  return h("form", {onsubmit: (event) => {
    event.preventDefault();
    const file = input.files[0];
    if (file) invoke(context, file, file.type || "application/octet-stream", drawAnswer);
    else replace(context.result, h("p", {class: "error"}, "Choose a file first."));
  }}, field("File", input), preview, runButton());
}

function jsonForm(context) {
  const body = h("textarea", {rows: 6, class: "code", "data-testid": "pg-json"},
    JSON.stringify(exampleBody(context.endpoint.task), null, 2));
  return h("form", {onsubmit: (event) => {
    event.preventDefault();
    invoke(context, body.value, "application/json", drawAnswer);
  }}, field("Request body (JSON)", body), runButton());
}

// Any answer: label bars when it is a list of scored labels, the generated text, else the JSON itself.
function drawAnswer(answer) {
  const rows = Array.isArray(answer) && Array.isArray(answer[0]) ? answer[0] : answer;
  if (Array.isArray(rows) && rows.length && rows.every((row) => row && typeof row.score === "number")) {
    return drawBars(rows.map((row) => [row.label ?? row.token_str ?? row.answer ?? "", row.score]));
  }
  if (answer && Array.isArray(answer.labels) && Array.isArray(answer.scores)) {
    return drawBars(answer.labels.map((label, index) => [label, answer.scores[index]]));
  }
  const first = Array.isArray(answer) ? answer[0] : answer;
  const key = first && typeof first === "object" && GENERATED.find((name) => typeof first[name] === "string");
  if (key) return h("p", {class: "answer", "data-testid": "pg-text-answer"}, first[key]);
  return h("pre", {class: "code", "data-testid": "pg-json-answer"}, JSON.stringify(answer, null, 2));
}

function drawBars(rows) {
  return h("div", {class: "bars", "data-testid": "label-bars"}, rows.map(([label, score]) =>
    h("div", {class: "bar-row", "data-testid": "label-bar"},
      h("span", {class: "bar-label"}, label),
      h("span", {class: "bar"}, h("span", {class: "fill", style: `width:${Math.max(0, Math.min(1, score)) * 100}%`})),
      h("span", {class: "bar-value"}, score.toFixed(3)))));
}

function drawRanked(texts, scores) {
  const order = texts.map((text, index) => [text, scores[index]]).sort((a, b) => b[1] - a[1]);
  return h("ol", {class: "ranked", "data-testid": "ranked"}, order.map(([text, score]) =>
    h("li", {"data-testid": "ranked-item"},
      h("span", {class: "bar-label"}, text),
      h("span", {class: "bar"}, h("span", {class: "fill", style: `width:${Math.max(0, Math.min(1, score)) * 100}%`})),
      h("span", {class: "bar-value", "data-testid": "ranked-score"}, score.toFixed(3)))));
}

// The text sent, its entities marked (they carry character offsets into it).
function drawEntities(entities, text) {
  const marked = h("p", {class: "entities", "data-testid": "entities"});
  let at = 0;
  for (const entity of [...entities].sort((a, b) => a.start - b.start)) {
    if (entity.start < at) continue;
    marked.append(text.slice(at, entity.start));
    const group = entity.entity_group ?? entity.entity ?? "";
    marked.append(h("mark", {"data-testid": "entity", "data-group": group, title: `${group} ${entity.score.toFixed(3)}`},
      text.slice(entity.start, entity.end), h("small", {}, group)));
    at = entity.end;
  }
  marked.append(text.slice(at));
  return entities.length ? marked : h("p", {class: "muted", "data-testid": "entities"}, "No entities found.");
}

function shapeOf(value) {
  const shape = [];
  for (let level = value; Array.isArray(level); level = level[0]) shape.push(level.length);
  return shape;
}

function drawVector(answer) {
  const values = answer.flat(Infinity);
  return h("div", {class: "vector", "data-testid": "vector"},
    h("p", {}, "shape ", h("code", {"data-testid": "vector-shape"}, `[${shapeOf(answer).join(", ")}]`)),
    h("code", {class: "values", "data-testid": "vector-values"}, `[${values.slice(0, 8).map((v) => v.toFixed(4)).join(", ")}${values.length > 8 ? ", …" : ""}]`));
}

// A chat: the conversation so far, streamed from the endpoint's OpenAI chat completions route.
function chatForm(context) {
  const messages = [];
  const log = h("div", {class: "chat", "data-testid": "chat"});
  const input = h("textarea", {rows: 2, "data-testid": "chat-input"}, "What is the capital of France?");
  const maxTokens = h("input", {type: "number", min: 1, value: 64, class: "small", "data-testid": "chat-max-tokens"});
  return h("form", {onsubmit: async (event) => {
    event.preventDefault();
    messages.push({role: "user", content: input.value});
    log.append(h("div", {class: "message user", "data-testid": "chat-message", "data-role": "user"}, input.value));
    const reply = h("div", {class: "message assistant", "data-testid": "chat-message", "data-role": "assistant"});
    log.append(reply);
    replace(context.result);
    const started = performance.now();
    try {
      const response = await fetch(`/endpoints/${context.endpoint.name}/v1/chat/completions`, {
        method: "POST", signal: context.signal, headers: authHeaders({"Content-Type": "application/json"}),
        body: JSON.stringify({model: context.endpoint.name, messages, stream: true, max_tokens: Number(maxTokens.value)}),
      });
      context.shown(response.status, performance.now() - started);
      if (!response.ok) {
        reply.classList.add("error");
        reply.textContent = await errorMessage(response);
        messages.pop();
        return;
      }
      let pending = "";
      await readStream(response, (text) => {
        pending += text;
        const events = pending.split("\n\n");
        pending = events.pop();
        for (const data of events.map((e) => e.replace(/^data: ?/, "")).filter((d) => d && d !== "[DONE]")) {
          reply.textContent += JSON.parse(data).choices?.[0]?.delta?.content ?? "";
        }
      });
      context.shown(response.status, performance.now() - started);
      messages.push({role: "assistant", content: reply.textContent});
    } catch (error) {
      if (error.name !== "AbortError") reply.textContent = error.message;
    }
  }}, log, field("Message", input), h("div", {class: "row"}, field("Max tokens", maxTokens), runButton()));
}
