// The create form: model (typed, or picked from the catalog), task, replicas or autoscaling, security, env.

import {api} from "../api.js";
import {errorLine, field, h, replace} from "../dom.js";

// An endpoint name from a model id or path: its last part, as the name pattern allows.
export function suggestName(model) {
  const last = model.replace(/[/\\]+$/, "").split(/[/\\]/).pop().replace(/\.gguf$/i, "");
  return last.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 63) || "my-endpoint";
}

function number(testid, value, attrs = {}) {
  return h("input", {type: "number", value, "data-testid": testid, class: "small", ...attrs});
}

export function createPage(view, {params}) {
  const error = h("div", {"data-testid": "create-error"});
  const name = h("input", {required: true, "data-testid": "create-name", value: params.get("name") || "",
    pattern: "[a-zA-Z0-9](-*[a-zA-Z0-9])*", maxlength: 63});
  const model = h("input", {required: true, "data-testid": "create-model", value: params.get("model") || "",
    placeholder: "Hub id, folder, .gguf file, archive or URL", list: "catalog-ids"});
  const pick = h("select", {"data-testid": "create-pick"}, h("option", {value: ""}, "Pick from the catalog…"));
  const ids = h("datalist", {id: "catalog-ids"});
  const task = h("select", {"data-testid": "create-task"});
  const replicas = number("create-replicas", 1, {min: 1, max: 64});
  const autoscaling = h("input", {type: "checkbox", "data-testid": "create-autoscaling"});
  const minReplicas = number("create-min", 1, {min: 0, max: 64});
  const maxReplicas = number("create-max", 2, {min: 1, max: 64});
  const target = number("create-target", 4, {min: 0.1, step: "any"});
  const zeroAfter = number("create-zero-after", 900, {min: 0, step: "any"});
  const scaling = h("fieldset", {class: "scaling", disabled: true},
    h("legend", {}, "Autoscaling"),
    h("div", {class: "row"}, field("Min replicas", minReplicas), field("Max replicas", maxReplicas),
      field("In-flight requests per replica", target), field("Scale to zero after (s, min 0)", zeroAfter)));
  const security = h("select", {"data-testid": "create-security"},
    h("option", {value: "public"}, "public: anyone who reaches the server"),
    h("option", {value: "protected"}, "protected: needs a token"));
  const envRows = h("div", {class: "env", "data-testid": "create-env"});
  const addEnv = (key = "", value = "") => envRows.append(h("div", {class: "row env-row"},
    h("input", {placeholder: "NAME", value: key, "data-testid": "env-key"}),
    h("input", {placeholder: "value", value, "data-testid": "env-value"}),
    h("button", {type: "button", onclick: (event) => event.target.closest(".env-row").remove()}, "Remove")));

  let catalog = [];
  let allTasks = [];
  const fillTasks = () => {
    const entry = catalog.find((item) => item.id === model.value.trim());
    const chosen = task.value || params.get("task") || "";
    const options = entry ? entry.tasks : allTasks;
    replace(task, h("option", {value: ""}, entry ? `inferred (${entry.tasks[0] ?? "?"})` : "inferred from the model"),
      options.map((name) => h("option", {value: name, selected: name === chosen}, name)));
  };
  model.addEventListener("input", () => {
    fillTasks();
    const entry = catalog.find((item) => item.id === model.value.trim());
    if (!name.dataset.touched) name.value = suggestName(entry ? entry.name : model.value);
  });
  name.addEventListener("input", () => { name.dataset.touched = "1"; });
  pick.addEventListener("change", () => {
    model.value = pick.value;
    model.dispatchEvent(new Event("input"));
  });
  autoscaling.addEventListener("change", () => { scaling.disabled = !autoscaling.checked; });

  const form = h("form", {class: "card", "data-testid": "create-form", onsubmit: async (event) => {
    event.preventDefault();
    const spec = {name: name.value.trim(), model: model.value.trim(), security: security.value,
      replicas: Number(replicas.value)};
    if (task.value) spec.task = task.value;
    const env = Object.fromEntries([...envRows.querySelectorAll(".env-row")]
      .map((row) => [row.children[0].value.trim(), row.children[1].value])
      .filter(([key]) => key));
    if (Object.keys(env).length) spec.env = env;
    if (autoscaling.checked) {
      spec.autoscaling = {min_replicas: Number(minReplicas.value), max_replicas: Number(maxReplicas.value),
        target: Number(target.value), scale_to_zero_after_s: Number(zeroAfter.value)};
      spec.replicas = Math.min(Math.max(spec.replicas, 1), spec.autoscaling.max_replicas);
    }
    replace(error);
    try {
      await api.create(spec);
      location.hash = `#/endpoints/${encodeURIComponent(spec.name)}`;
    } catch (failure) {
      replace(error, errorLine(failure));
    }
  }},
  field("Model", model), ids, pick,
  h("div", {class: "row"}, field("Name", name), field("Task", task), field("Replicas", replicas)),
  h("label", {class: "check"}, autoscaling, "Autoscale between min and max replicas"), scaling,
  field("Security", security),
  h("fieldset", {}, h("legend", {}, "Environment"), envRows,
    h("button", {type: "button", "data-testid": "env-add", onclick: () => addEnv()}, "Add variable")),
  h("div", {class: "row end"}, h("a", {href: "#/endpoints", class: "button"}, "Cancel"),
    h("button", {type: "submit", class: "primary", "data-testid": "create-submit"}, "Create endpoint")),
  error);
  replace(view, h("h2", {}, "New endpoint"), form);
  if (model.value && !name.value) name.value = suggestName(model.value);
  fillTasks();
  Promise.all([api.models(), api.tasks()]).then(([models, tasks]) => {
    catalog = models;
    allTasks = tasks;
    for (const item of models) {
      pick.append(h("option", {value: item.id}, `${item.name} (${item.source}, ${item.tasks.join(", ")})`));
      ids.append(h("option", {value: item.id}, item.name));
    }
    fillTasks();
  }).catch((failure) => replace(error, errorLine(failure)));
}
