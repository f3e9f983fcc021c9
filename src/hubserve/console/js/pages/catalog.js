// The model catalog: the models this machine holds, their tasks, and a one-click deploy.

import {api} from "../api.js";
import {errorLine, formatBytes, h, replace} from "../dom.js";
import {suggestName} from "./create.js";

const SOURCES = {"package": "installed package", "hub-cache": "Hugging Face cache", "folder": "catalog folder"};

export function catalogPage(view) {
  const body = h("div", {"data-testid": "catalog"}, h("p", {class: "muted"}, "Looking for models…"));
  const error = h("div");
  replace(view, h("h2", {}, "Models on this machine"),
    h("p", {class: "muted"}, "Installed model packages, the Hugging Face cache (HF_HUB_CACHE or HF_HOME), and the " +
      "model folders and .gguf files in the home's catalog folder (~/.hubserve/catalog)."), error, body);
  api.models().then((models) => {
    replace(body, models.length ? h("table", {class: "list"},
      h("thead", {}, h("tr", {}, ["Model", "Source", "Format", "Tasks", "Size", ""].map((name) => h("th", {}, name)))),
      h("tbody", {}, models.map((model) => row(model, error))))
      : h("p", {class: "muted"}, "No models found."));
  }).catch((failure) => replace(body, errorLine(failure)));
}

function row(model, error) {
  const taskPick = h("select", {"data-testid": "catalog-task"},
    model.tasks.map((task) => h("option", {value: task}, task)));
  const deploy = async () => {
    const name = await freeName(suggestName(model.name));
    try {
      await api.create({name, model: model.id, ...(taskPick.value ? {task: taskPick.value} : {})});
      location.hash = `#/endpoints/${encodeURIComponent(name)}`;
    } catch (failure) {
      replace(error, errorLine(failure));
    }
  };
  const customize = () => {
    const params = new URLSearchParams({model: model.id, task: taskPick.value, name: suggestName(model.name)});
    location.hash = `#/endpoints/new?${params}`;
  };
  return h("tr", {"data-testid": "catalog-row", "data-id": model.id, "data-name": model.name},
    h("td", {}, h("b", {}, model.name), h("div", {class: "muted model", title: model.path}, model.id)),
    h("td", {}, SOURCES[model.source] ?? model.source),
    h("td", {}, model.format),
    h("td", {}, taskPick),
    h("td", {}, formatBytes(model.size_bytes)),
    h("td", {class: "nowrap"},
      h("button", {type: "button", class: "primary", "data-testid": "catalog-deploy", onclick: deploy}, "Deploy"),
      " ", h("button", {type: "button", "data-testid": "catalog-customize", onclick: customize}, "Customize…")));
}

// `base`, or `base-2`, `base-3`, ... : the first name no endpoint has yet.
async function freeName(base) {
  const taken = new Set((await api.endpoints()).map((endpoint) => endpoint.spec.name));
  let name = base;
  for (let index = 2; taken.has(name); index += 1) name = `${base.slice(0, 58)}-${index}`;
  return name;
}
