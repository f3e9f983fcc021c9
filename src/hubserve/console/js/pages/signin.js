// The sign-in page: the admin token, checked against the control API, kept for this browser tab.

import {errorMessage, session} from "../api.js";
import {h, replace} from "../dom.js";

export function signInPage(view, refusal, signedIn) {
  const token = h("input", {type: "password", autocomplete: "current-password", "data-testid": "signin-token",
    placeholder: "hs_..."});
  const error = h("p", {class: "error", "data-testid": "signin-error"}, refusal);
  replace(view, h("section", {class: "card narrow", "data-testid": "signin"},
    h("h2", {}, "Sign in"),
    h("p", {class: "muted"}, "The admin token: printed when the server first started, and in ~/.hubserve/admin-token."),
    h("form", {onsubmit: async (event) => {
      event.preventDefault();
      const response = await fetch("/api/v1/endpoints", {headers: {Authorization: `Bearer ${token.value.trim()}`}});
      if (!response.ok) {
        error.textContent = await errorMessage(response);
        return;
      }
      session.signIn(token.value.trim());
      signedIn();
    }}, h("label", {class: "field"}, h("span", {}, "Token"), token),
    h("button", {type: "submit", class: "primary", "data-testid": "signin-submit"}, "Sign in")), error));
  token.focus();
}
