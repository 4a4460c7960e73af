// Runs the npm LibreTranslate client (`libretranslate`) against a gateway and prints
// what each call returned, as one JSON object; tests/libretranslate_clients.rs asserts
// it. Usage: node node_client.js BASE_URL KO JA EN. The library has one call,
// translate(): it reads GET /languages, then POSTs JSON to /translate (source "auto"
// when none is given). A call that throws is recorded as {"error": ...}.
const { translate } = require("libretranslate");

const [base, ko, ja, en] = process.argv.slice(2);

async function record(out, name, call) {
  try {
    out[name] = await call();
  } catch (e) {
    out[name] = { error: String(e) };
  }
}

(async () => {
  const out = {};
  await record(out, "node.translate", () =>
    translate({ query: ko, source: "ko", target: "en", apiurl: base }));
  await record(out, "node.translate_list", () =>
    translate({ query: [ko, ko + " 2"], source: "ko", target: "en", apiurl: base }));
  await record(out, "node.translate_auto", () =>
    translate({ query: ja, target: "en", apiurl: base }));
  await record(out, "node.translate_auto_list", () =>
    translate({ query: [ko, ja, en], target: "en", apiurl: base }));
  // The library refuses a language /languages does not list, before any request.
  await record(out, "node.unknown_language", () =>
    translate({ query: ko, source: "xx", target: "en", apiurl: base }));
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
