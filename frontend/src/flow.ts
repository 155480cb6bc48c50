// The flow view: conversations, their messages' chains, and each message's waterfall, read
// from the flow view's JSON API (omni_trace/flowview/api.py). Everything shown is inserted as
// text, never as HTML: span attributes come from clients and models.
//
// The page's parts (flowview/): api (the API's generated types and fetch), format (words and
// numbers), chart (hops over time), waterfall, router, and one module per page.

import { start } from "./flowview/router";

if (typeof document !== "undefined" && document.getElementById("view")) start();
