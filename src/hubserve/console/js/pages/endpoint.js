// An endpoint's page: status, snippets, playground, analytics, live logs; update, pause, resume and delete.

import {api, readStream} from "../api.js";
import {chart, legend} from "../charts.js";
import {confirmAction, copyButton, errorLine, field, h, replace} from "../dom.js";
import {playground} from "../playground.js";
import {snippets} from "../snippets.js";
import {stateBadge} from "./endpoints.js";

const STATUS_MS = 2000;
const ANALYTICS_MS = 5000;
const MAX_LOG_CHARS = 200_000;
const REQUESTS = [{key: (p) => p.requests, label: "requests", color: "#3b6fd8", kind: "bar"}];
const LATENCY = [
  {key: (p) => p.p50_ms, label: "p50", color: "#2e9e6b"},
  {key: (p) => p.p90_ms, label: "p90", color: "#e0a030"},
  {key: (p) => p.p99_ms, label: "p99", color: "#d0453a"},
];
const REPLICAS = [{key: (p) => p.replicas, label: "replicas", color: "#7a55c8"}];

export function endpointPage(view, {name}) {
  const stops = [];
  const header = h("section", {class: "card", "data-testid": "endpoint-status"});
  const actions = h("div", {class: "row"});
  const error = h("div", {"data-testid": "action-error"});
  const snippetBox = h("section", {class: "card"});
  const playgroundBox = h("div");
  const analytics = h("section", {class: "card", "data-testid": "analytics"});
  const logs = h("pre", {class: "logs", "data-testid": "logs"});
  replace(view, h("div", {class: "row spread"}, h("h2", {"data-testid": "endpoint-name"}, name), actions), error,
    header, playgroundBox, analytics, snippetBox,
    h("section", {class: "card"}, h("h3", {}, "Logs"), logs));

  let endpoint = null;
  let playgroundTask = null;
  let timer;
  async function refresh() {
    try {
      endpoint = await api.endpoint(name);
      drawStatus(header, endpoint);
      drawActions(actions, endpoint, error, refresh);
      const task = endpoint.status.task ?? endpoint.spec.task;
      if (task && task !== playgroundTask) {
        playgroundTask = task;
        const made = playground({name, task});
        stops.push(made.stop);
        replace(playgroundBox, made.node);
        drawSnippets(snippetBox, endpoint, task);
      }
    } catch (failure) {
      replace(header, errorLine(failure));
    }
    clearTimeout(timer);
    timer = setTimeout(refresh, STATUS_MS);
  }
  refresh();
  stops.push(() => clearTimeout(timer));
  stops.push(drawAnalytics(analytics, name));
  stops.push(followLogs(logs, name));
  return () => stops.forEach((stop) => stop());
}

function drawStatus(box, {spec, status, url}) {
  const scaling = spec.autoscaling
    ? `autoscaling ${spec.autoscaling.min_replicas}–${spec.autoscaling.max_replicas}` : "fixed";
  replace(box, h("dl", {class: "facts"},
    h("dt", {}, "State"), h("dd", {}, stateBadge(status.state),
      status.message ? h("span", {class: "muted", "data-testid": "status-message"}, ` ${status.message}`) : ""),
    h("dt", {}, "Task"), h("dd", {"data-testid": "endpoint-task"}, status.task ?? spec.task ?? "—"),
    h("dt", {}, "Model"), h("dd", {class: "model"}, spec.model),
    h("dt", {}, "Replicas"), h("dd", {"data-testid": "endpoint-replicas"},
      `${status.ready_replicas}/${status.target_replicas} ready (${scaling})`),
    h("dt", {}, "Security"), h("dd", {}, spec.security),
    h("dt", {}, "URL"), h("dd", {}, h("code", {"data-testid": "endpoint-url"}, url), " ", copyButton(url))));
}

function drawActions(box, {spec, status}, error, refresh) {
  const name = spec.name;
  const act = (message, label, run, after = refresh) => async () => {
    if (!(await confirmAction(message, label))) return;
    replace(error);
    try {
      await run();
      after();
    } catch (failure) {
      replace(error, errorLine(failure));
    }
  };
  const paused = status.state === "paused";
  replace(box,
    h("button", {type: "button", "data-testid": "update", onclick: () => updateDialog(spec, act)}, "Update"),
    paused
      ? h("button", {type: "button", "data-testid": "resume",
        onclick: act(`Resume ${name}? It deploys its replicas again.`, "Resume", () => api.resume(name))}, "Resume")
      : h("button", {type: "button", "data-testid": "pause",
        onclick: act(`Pause ${name}? Its replicas stop, and requests get a 503 until it is resumed.`, "Pause",
          () => api.pause(name))}, "Pause"),
    h("button", {type: "button", class: "danger", "data-testid": "delete",
      onclick: act(`Delete ${name}? This cannot be undone.`, "Delete", () => api.remove(name),
        () => { location.hash = "#/endpoints"; })}, "Delete"));
}

// The update form, in a dialog: replicas, or autoscaling's min and max.
function updateDialog(spec, act) {
  const scaling = spec.autoscaling;
  const replicas = h("input", {type: "number", min: 1, max: 64, value: spec.replicas, "data-testid": "update-replicas"});
  const min = h("input", {type: "number", min: 0, max: 64, value: scaling?.min_replicas ?? 1, "data-testid": "update-min"});
  const max = h("input", {type: "number", min: 1, max: 64, value: scaling?.max_replicas ?? 1, "data-testid": "update-max"});
  const dialog = h("dialog", {class: "confirm", "data-testid": "update-dialog"},
    h("form", {method: "dialog", onsubmit: (event) => {
      event.preventDefault();
      dialog.close();
      dialog.remove();
      const change = scaling
        ? {autoscaling: {...scaling, min_replicas: Number(min.value), max_replicas: Number(max.value)}}
        : {replicas: Number(replicas.value)};
      act(`Update ${spec.name}?`, "Update", () => api.update(spec.name, change))();
    }},
    h("h3", {}, `Update ${spec.name}`),
    scaling ? [field("Min replicas", min), field("Max replicas", max)] : field("Replicas", replicas),
    h("div", {class: "row end"},
      h("button", {type: "button", "data-testid": "update-cancel", onclick: () => { dialog.close(); dialog.remove(); }},
        "Cancel"),
      h("button", {type: "submit", class: "primary", "data-testid": "update-submit"}, "Update"))));
  document.body.append(dialog);
  dialog.showModal();
}

function drawSnippets(box, endpoint, task) {
  const list = snippets({url: endpoint.url, name: endpoint.spec.name, task,
    protected: endpoint.spec.security === "protected"});
  const code = h("pre", {class: "code", "data-testid": "snippet-code"});
  const tabs = h("div", {class: "tabs", "data-testid": "snippet-tabs"});
  const show = (index) => {
    code.textContent = list[index].code;
    [...tabs.children].forEach((tab, at) => tab.classList.toggle("active", at === index));
  };
  list.forEach((snippet, index) =>
    tabs.append(h("button", {type: "button", "data-testid": `snippet-${snippet.name}`, onclick: () => show(index)},
      snippet.name)));
  replace(box, h("div", {class: "row spread"}, h("h3", {}, "Call it"), copyButton(() => code.textContent)), tabs, code);
  show(0);
}

function drawAnalytics(box, name) {
  let period = "1h";
  let timer;
  const body = h("div");
  const periods = h("div", {class: "tabs"}, ["1h", "1d"].map((value) =>
    h("button", {type: "button", "data-testid": `period-${value}`, class: value === period ? "active" : "",
      onclick: (event) => {
        period = value;
        [...periods.children].forEach((tab) => tab.classList.toggle("active", tab === event.target));
        load();
      }}, value === "1h" ? "Last hour" : "Last day")));
  replace(box, h("div", {class: "row spread"}, h("h3", {}, "Analytics"), periods), body);
  async function load() {
    clearTimeout(timer);
    try {
      const data = await api.analytics(name, period);
      const totals = data.totals;
      const ms = (value) => (value === null || value === undefined ? "—" : `${value.toFixed(1)} ms`);
      replace(body,
        h("div", {class: "totals"},
          h("span", {}, h("b", {"data-testid": "analytics-total"}, String(totals.requests)), " requests"),
          h("span", {}, h("b", {}, String(+totals.requests_per_min.toFixed(2))), " /min"),
          h("span", {}, "2xx ", h("b", {}, String(totals.status["2xx"] ?? 0)), " · 4xx ",
            h("b", {}, String(totals.status["4xx"] ?? 0)), " · 5xx ", h("b", {}, String(totals.status["5xx"] ?? 0))),
          h("span", {}, "p50 ", h("b", {}, ms(totals.p50_ms)), " · p90 ", h("b", {}, ms(totals.p90_ms)),
            " · p99 ", h("b", {}, ms(totals.p99_ms)))),
        h("h4", {}, `Requests per ${data.step_s >= 60 ? `${data.step_s / 60} min` : `${data.step_s} s`}`),
        chart(data.points, REQUESTS, {title: "requests", testid: "chart-requests"}),
        h("div", {class: "pair"},
          h("div", {}, h("h4", {}, "Latency"), legend(LATENCY),
            chart(data.points, LATENCY, {title: "latency", unit: " ms", testid: "chart-latency", width: 470})),
          h("div", {}, h("h4", {}, "Replicas"), legend(REPLICAS),
            chart(data.points, REPLICAS, {title: "replicas", testid: "chart-replicas", width: 470}))));
    } catch (failure) {
      replace(body, errorLine(failure));
    }
    timer = setTimeout(load, ANALYTICS_MS);
  }
  load();
  return () => clearTimeout(timer);
}

// The log's last lines, then new ones as the server streams them, until the page is left.
function followLogs(box, name) {
  const controller = new AbortController();
  api.logs(name, controller.signal)
    .then((response) => readStream(response, (text) => {
      const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      box.textContent = (box.textContent + text).slice(-MAX_LOG_CHARS);
      if (atBottom) box.scrollTop = box.scrollHeight;
    }))
    .catch((failure) => {
      if (failure.name !== "AbortError") box.textContent += `\n${failure.message}`;
    });
  return () => controller.abort();
}
