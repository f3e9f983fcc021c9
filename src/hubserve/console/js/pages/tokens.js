// Tokens: list, create (the secret shown once), revoke.

import {api} from "../api.js";
import {confirmAction, copyButton, errorLine, field, h, replace} from "../dom.js";

export function tokensPage(view) {
  const list = h("div", {"data-testid": "token-list"});
  const created = h("div", {"data-testid": "token-created"});
  const error = h("div");
  const name = h("input", {required: true, "data-testid": "token-name", placeholder: "my-app"});
  const endpoints = h("input", {"data-testid": "token-endpoints", placeholder: "all endpoints"});
  const admin = h("input", {type: "checkbox", "data-testid": "token-admin"});
  const aws = h("input", {type: "checkbox", "data-testid": "token-aws"});
  async function load() {
    try {
      const tokens = await api.tokens();
      replace(list, h("table", {class: "list"},
        h("thead", {}, h("tr", {}, ["Name", "Id", "Kind", "Endpoints", "Admin", "Created", ""].map((n) => h("th", {}, n)))),
        h("tbody", {}, tokens.map((token) => h("tr", {"data-testid": "token-row", "data-name": token.name},
          h("td", {}, token.name), h("td", {}, h("code", {}, token.id)), h("td", {}, token.kind),
          h("td", {}, token.endpoints ? token.endpoints.join(", ") : "all"), h("td", {}, token.admin ? "yes" : ""),
          h("td", {}, new Date(token.created_at * 1000).toLocaleString()),
          h("td", {}, h("button", {type: "button", class: "danger", "data-testid": "token-revoke",
            onclick: () => revoke(token)}, "Revoke")))))));
    } catch (failure) {
      replace(list, errorLine(failure));
    }
  }
  async function revoke(token) {
    if (!(await confirmAction(`Revoke ${token.name}? Clients using it get a 401 from now on.`, "Revoke"))) return;
    try {
      await api.revokeToken(token.id);
    } catch (failure) {
      replace(error, errorLine(failure));
    }
    load();
  }
  const form = h("form", {class: "card", onsubmit: async (event) => {
    event.preventDefault();
    replace(error);
    const scope = endpoints.value.split(",").map((e) => e.trim()).filter(Boolean);
    try {
      const token = await api.createToken({name: name.value.trim(), endpoints: scope.length ? scope : null,
        admin: admin.checked, aws: aws.checked});
      const secret = token.token ?? `AWS_ACCESS_KEY_ID=${token.access_key_id} AWS_SECRET_ACCESS_KEY=${token.secret_access_key}`;
      replace(created, h("div", {class: "card notice"},
        h("p", {}, "Copy it now: it is shown only once."),
        h("div", {class: "row"}, h("code", {"data-testid": "token-secret"}, secret), copyButton(secret))));
      form.reset();
      load();
    } catch (failure) {
      replace(error, errorLine(failure));
    }
  }}, h("h3", {}, "New token"),
  h("div", {class: "row"}, field("Name", name), field("Endpoints (comma separated)", endpoints)),
  h("label", {class: "check"}, admin, "Admin (control API and every endpoint)"),
  h("label", {class: "check"}, aws, "An AWS access key pair (SigV4) instead of a bearer token"),
  h("div", {class: "row end"}, h("button", {type: "submit", class: "primary", "data-testid": "token-create"}, "Create")));
  replace(view, h("h2", {}, "Tokens"), created, error, list, form);
  load();
}
