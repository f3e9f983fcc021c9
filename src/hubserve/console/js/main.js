// The console's shell: sign-in, the navigation, and hash routes to each page.

import {session} from "./api.js";
import {h, replace} from "./dom.js";
import {catalogPage} from "./pages/catalog.js";
import {createPage} from "./pages/create.js";
import {endpointPage} from "./pages/endpoint.js";
import {endpointsPage} from "./pages/endpoints.js";
import {signInPage} from "./pages/signin.js";
import {tokensPage} from "./pages/tokens.js";

const view = document.getElementById("view");
const NEXT_KEY = "hubserve.next";
let stopPage = () => {};
let refusal = "";  // why the server refused the token, shown on the sign-in page

// Each route: a pattern over the hash path and the page it renders; a page returns a function that stops it.
const ROUTES = [
  [/^\/endpoints\/new$/, createPage],
  [/^\/endpoints\/([^/]+)$/, endpointPage],
  [/^\/endpoints$/, endpointsPage],
  [/^\/tokens$/, tokensPage],
  [/^\/catalog$/, catalogPage],
];

function render() {
  stopPage();
  stopPage = () => {};
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  document.body.classList.toggle("signed-in", Boolean(session.token()));
  if (!session.token() || path === "/signin") {
    const why = refusal;
    refusal = "";
    signInPage(view, why, () => {
      const next = sessionStorage.getItem(NEXT_KEY) || "#/endpoints";
      sessionStorage.removeItem(NEXT_KEY);
      if (location.hash === next) render();
      else location.hash = next;
    });
    return;
  }
  for (const [pattern, page] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      replace(view);
      stopPage = page(view, {params, name: match[1] && decodeURIComponent(match[1])}) || stopPage;
      for (const link of document.querySelectorAll("nav a")) {
        link.classList.toggle("active", path.startsWith(link.getAttribute("href").slice(1)));
      }
      return;
    }
  }
  location.hash = "#/endpoints";
}

window.addEventListener("hashchange", render);
// A refused token (any call's 401): back to the sign-in, then to where the user was.
window.addEventListener("hubserve:signin", (event) => {
  refusal = event.detail;
  if (!location.hash.startsWith("#/signin")) sessionStorage.setItem(NEXT_KEY, location.hash);
  render();
});
document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  render();
});
document.querySelector("nav").replaceWith(h("nav", {},
  h("a", {href: "#/endpoints", "data-testid": "nav-endpoints"}, "Endpoints"),
  h("a", {href: "#/catalog", "data-testid": "nav-catalog"}, "Models"),
  h("a", {href: "#/tokens", "data-testid": "nav-tokens"}, "Tokens")));
render();
