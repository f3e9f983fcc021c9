// The endpoint list: state, task, model, replicas, URL and requests per minute, refreshed every few seconds.

import {api} from "../api.js";
import {errorLine, h, replace} from "../dom.js";

const REFRESH_MS = 3000;

export function stateBadge(state) {
  return h("span", {class: `state state-${state}`, "data-testid": "state"}, state);
}

export function endpointsPage(view) {
  const body = h("div", {"data-testid": "endpoint-list"});
  replace(view, h("div", {class: "row spread"}, h("h2", {}, "Endpoints"),
    h("a", {class: "button primary", href: "#/endpoints/new", "data-testid": "new-endpoint"}, "New endpoint")), body);
  let timer;
  async function refresh() {
    try {
      const [endpoints, analytics] = await Promise.all([api.endpoints(), api.allAnalytics().catch(() => null)]);
      replace(body, endpoints.length ? table(endpoints, analytics?.endpoints ?? {})
        : h("p", {class: "muted", "data-testid": "no-endpoints"}, "No endpoints yet: create one, or deploy a model from ",
          h("a", {href: "#/catalog"}, "the catalog"), "."));
    } catch (error) {
      replace(body, errorLine(error));
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }
  refresh();
  return () => clearTimeout(timer);
}

function table(endpoints, analytics) {
  return h("table", {class: "list"},
    h("thead", {}, h("tr", {}, ["Name", "State", "Task", "Model", "Replicas", "Requests/min", "URL"].map((name) =>
      h("th", {}, name)))),
    h("tbody", {}, endpoints.map((endpoint) => {
      const {spec, status} = endpoint;
      const rate = analytics[spec.name]?.requests_per_min;
      return h("tr", {"data-testid": "endpoint-row", "data-name": spec.name},
        h("td", {}, h("a", {href: `#/endpoints/${encodeURIComponent(spec.name)}`, "data-testid": "endpoint-link"}, spec.name)),
        h("td", {}, stateBadge(status.state)),
        h("td", {}, status.task ?? spec.task ?? "—"),
        h("td", {class: "model", title: spec.model}, spec.model),
        h("td", {"data-testid": "replicas"}, `${status.ready_replicas}/${status.target_replicas}`),
        h("td", {"data-testid": "requests-per-min"}, rate === undefined ? "—" : String(+rate.toFixed(2))),
        h("td", {}, h("code", {}, endpoint.url)));
    })));
}
